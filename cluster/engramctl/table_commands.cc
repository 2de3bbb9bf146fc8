// engramctl table commands: create-table, drop-table, list, describe, stats, get, put, push,
// checkpoint, restore, drop-checkpoint.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "client/client.h"
#include "client/engram_hash.h"
#include "cluster/cluster_state.h"
#include "cluster/engramctl/commands.h"
#include "cluster/etcd_client.h"
#include "engram/row_codec.h"

namespace engram::ctl {
namespace {

using Json = nlohmann::json;

}  // namespace

int Fail(const std::string& cmd, const Status& s) {
  std::cerr << "engramctl " << cmd << ": " << s.ToString() << "\n";
  return 1;
}

namespace {

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace

StatusOr<std::unique_ptr<cluster::EtcdClient>> OpenEtcd(const CtlFlags& f) {
  cluster::EtcdClient::Options eo;
  eo.endpoint = f.etcd;
  eo.timeout = std::chrono::milliseconds(f.timeout_ms);
  return cluster::EtcdClient::Connect(eo);
}

StatusOr<std::unique_ptr<client::Client>> Open(const CtlFlags& f, bool long_running) {
  client::ClientOptions o;
  o.servers = Split(f.servers, ',');
  if (o.servers.empty() && !f.etcd.empty()) {
    ENGRAM_ASSIGN_OR_RETURN(auto etcd, OpenEtcd(f));
    ENGRAM_ASSIGN_OR_RETURN(o.servers, cluster::DiscoverServers(*etcd, f.cluster));
  }
  if (o.servers.empty()) return Status::InvalidArgument("--servers=HOST:PORT[,HOST:PORT...] or --etcd=HOST:PORT is required");
  o.timeout = std::chrono::milliseconds(f.timeout_ms);
  if (long_running) {  // A checkpoint or restore of a big table takes minutes; never run one twice.
    o.timeout = std::max(o.timeout, std::chrono::milliseconds(std::chrono::hours(6)));
    o.max_attempts = 1;
  }
  return client::Client::Connect(o);
}

namespace {

StatusOr<std::vector<uint64_t>> ParseRows(const std::string& s) {
  std::vector<uint64_t> rows;
  for (const auto& item : Split(s, ',')) {
    try {
      size_t used = 0;
      if (item[0] == '-') throw std::invalid_argument(item);
      rows.push_back(std::stoull(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      return Status::InvalidArgument("--rows: '" + item + "' is not a row id");
    }
  }
  if (rows.empty()) return Status::InvalidArgument("--rows=R1,R2,... is required");
  return rows;
}

StatusOr<Json> ReadJson(const std::string& path) {
  std::ifstream f(path);
  if (!f) return Status::NotFound("cannot open '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  Json j = Json::parse(ss.str(), nullptr, false);
  if (j.is_discarded()) return Status::InvalidArgument(path + ": not valid JSON");
  return j;
}

// Reads a JSON list of n rows of `dim` numbers into f32.
StatusOr<std::vector<float>> ReadMatrix(const std::string& path, size_t n, uint32_t dim) {
  ENGRAM_ASSIGN_OR_RETURN(Json j, ReadJson(path));
  if (!j.is_array() || j.size() != n) {
    return Status::InvalidArgument(path + ": expected a list of " + std::to_string(n) + " rows (one per --rows entry)");
  }
  std::vector<float> out;
  out.reserve(n * dim);
  for (size_t i = 0; i < n; ++i) {
    if (!j[i].is_array() || j[i].size() != dim) {
      return Status::InvalidArgument(path + ": row " + std::to_string(i) + " must hold " + std::to_string(dim) +
                                     " numbers (the table's dim)");
    }
    for (const auto& v : j[i]) {
      if (!v.is_number()) return Status::InvalidArgument(path + ": row " + std::to_string(i) + " holds a non-number");
      out.push_back(v.get<float>());
    }
  }
  return out;
}

Json InfoJson(const wire::TableInfo& t) {
  const auto& s = t.schema;
  return {{"name", s.name},
          {"rows", s.num_rows},
          {"dim", s.dim},
          {"dtype", DTypeName(s.dtype)},
          {"value_bytes", s.value_bytes()},
          {"optimizer", OptimizerName(s.optimizer.kind)},
          {"lr", s.optimizer.lr},
          {"init", InitName(s.init.kind)},
          {"init_scale", s.init.scale},
          {"seed", s.init.seed},
          {"dram_bytes", s.dram_bytes},
          {"shards", t.owners.size()},
          {"epoch", t.epoch},
          {"rows_touched", t.touched_rows},
          {"bytes_per_row", t.bytes_per_row}};
}

StatusOr<TableSchema> SchemaFromFlags(const CtlFlags& f, const std::string& name, uint64_t rows, uint32_t dim) {
  TableSchema s;
  s.name = name;
  s.num_rows = rows;
  s.dim = dim;
  ENGRAM_ASSIGN_OR_RETURN(s.dtype, ParseDType(f.dtype));
  ENGRAM_ASSIGN_OR_RETURN(s.optimizer.kind, ParseOptimizer(f.optimizer));
  ENGRAM_ASSIGN_OR_RETURN(s.init.kind, ParseInit(f.init));
  s.optimizer.lr = static_cast<float>(f.lr);
  s.init.scale = static_cast<float>(f.init_scale);
  s.init.seed = f.seed;
  s.dram_bytes = f.dram_bytes;
  if (!IsTrainable(s.dtype)) {  // Serving rows: no optimizer, loaded by put/import.
    s.optimizer.kind = OptimizerKind::kNone;
    s.init.kind = InitKind::kZeros;
  }
  ENGRAM_RETURN_IF_ERROR(s.Validate());
  return s;
}

}  // namespace

int RunTableCommand(const std::string& cmd, const CtlFlags& f) {
  auto c = Open(f, cmd == "checkpoint" || cmd == "restore");
  if (!c.ok()) return Fail(cmd, c.status());
  client::Client& cl = **c;

  if (cmd == "create-table") {
    if (f.name.empty()) return Fail(cmd, Status::InvalidArgument("--name is required"));
    std::vector<TableSchema> schemas;
    if (!f.spec.empty()) {
      auto spec = client::EngramSpec::FromFile(f.spec);
      if (!spec.ok()) return Fail(cmd, spec.status());
      auto h = client::EngramHasher::Create(*spec);
      if (!h.ok()) return Fail(cmd, h.status());
      for (int64_t layer : spec->layer_ids) {
        auto s = SchemaFromFlags(f, f.name + "_layer" + std::to_string(layer), h->layer(layer)->table_rows,
                                 static_cast<uint32_t>(spec->head_dim()));
        if (!s.ok()) return Fail(cmd, s.status());
        schemas.push_back(*s);
      }
    } else {
      if (f.rows == 0 || f.dim == 0) return Fail(cmd, Status::InvalidArgument("--rows and --dim (or --spec) are required"));
      auto s = SchemaFromFlags(f, f.name, f.rows, f.dim);
      if (!s.ok()) return Fail(cmd, s.status());
      schemas.push_back(*s);
    }
    Json out = Json::array();
    for (const auto& s : schemas) {
      uint32_t shards = f.shards;
      // The default shard count shrinks for tiny tables so that every shard holds rows.
      while (!f.shards_given && shards > 1 && (shards - 1) * ((s.num_rows + shards - 1) / shards) >= s.num_rows) --shards;
      const uint32_t replicas = f.replicas > 0 ? static_cast<uint32_t>(f.replicas)
                                                : (!f.etcd.empty() && cl.num_servers() >= 2 ? 2u : 1u);
      if (Status st = cl.CreateTable(s, shards, replicas); !st.ok()) return Fail(cmd, st);
      if (!f.etcd.empty()) {
        // The cluster's agreed record of the table (schema, epoch, shard owners).
        auto info = cl.DescribeTable(s.name);
        auto etcd = OpenEtcd(f);
        Status st = info.ok() ? (etcd.ok() ? cluster::ClusterState(etcd->get(), f.cluster).CreateTable(*info)
                                           : etcd.status())
                              : info.status();
        if (!st.ok()) {
          cl.DropTable(s.name).IgnoreError();  // Not recorded in the cluster: not created.
          return Fail(cmd, st.WithContext("recording table '" + s.name + "' in etcd"));
        }
      }
      out.push_back(s.name);
      if (!f.json) {
        std::cout << "created " << s.name << ": " << s.num_rows << " rows x " << s.dim << " " << DTypeName(s.dtype)
                  << ", optimizer " << OptimizerName(s.optimizer.kind) << ", " << shards << " shards over "
                  << cl.num_servers() << " server(s)\n";
      }
    }
    if (f.json) std::cout << Json{{"created", out}}.dump() << "\n";
    return 0;
  }
  if (cmd == "drop-table") {
    if (f.name.empty()) return Fail(cmd, Status::InvalidArgument("--name is required"));
    if (!f.etcd.empty()) {  // The record first: daemons following etcd would create the table again.
      auto etcd = OpenEtcd(f);
      Status st = etcd.ok() ? cluster::ClusterState(etcd->get(), f.cluster).DropTable(f.name) : etcd.status();
      if (!st.ok() && st.code() != Code::kNotFound) return Fail(cmd, st.WithContext("removing the etcd record"));
    }
    if (Status s = cl.DropTable(f.name); !s.ok()) return Fail(cmd, s);
    if (f.json) std::cout << Json{{"dropped", f.name}}.dump() << "\n";
    else std::cout << "dropped " << f.name << "\n";
    return 0;
  }
  if (cmd == "list") {
    auto tables = cl.ListTables();
    if (!tables.ok()) return Fail(cmd, tables.status());
    if (f.json) {
      Json out = Json::array();
      for (const auto& t : *tables) out.push_back(InfoJson(t));
      std::cout << out.dump() << "\n";
    } else {
      std::printf("%-32s %14s %6s %-15s %-8s %14s\n", "NAME", "ROWS", "DIM", "DTYPE", "OPTIM", "ROWS TOUCHED");
      for (const auto& t : *tables) {
        std::printf("%-32s %14llu %6u %-15s %-8s %14llu\n", t.schema.name.c_str(),
                    static_cast<unsigned long long>(t.schema.num_rows), t.schema.dim, DTypeName(t.schema.dtype),
                    OptimizerName(t.schema.optimizer.kind), static_cast<unsigned long long>(t.touched_rows));
      }
    }
    return 0;
  }
  if (cmd == "describe") {
    auto t = cl.DescribeTable(f.table);
    if (!t.ok()) return Fail(cmd, t.status());
    const Json j = InfoJson(*t);
    if (f.json) {
      std::cout << j.dump() << "\n";
    } else {
      for (const auto& [k, v] : j.items()) std::cout << k << ": " << v.dump() << "\n";
    }
    return 0;
  }
  if (cmd == "stats") {
    auto st = cl.ServerStatus();
    if (!st.ok()) return Fail(cmd, st.status());
    Json out = Json::array();
    for (const auto& s : *st) out.push_back(Json::parse(s));
    std::cout << (f.json ? out.dump() : out.dump(2)) << "\n";
    return 0;
  }
  if (cmd == "import" || cmd == "export") return RunImportExport(cmd, f, cl);
  if (cmd == "checkpoint" || cmd == "restore" || cmd == "drop-checkpoint") {
    if (cmd == "restore" && (f.table.empty() || f.name.empty())) {
      return Fail(cmd, Status::InvalidArgument("restore needs --table=N and --name=LABEL (the checkpoint's label)"));
    }
    if (cmd == "drop-checkpoint" && f.name.empty()) {
      return Fail(cmd, Status::InvalidArgument("drop-checkpoint needs --name=LABEL"));
    }
    // One server at a time, with a progress line each: a checkpoint or restore of a big table
    // takes a while, and interrupting between servers leaves each server consistent.
    Json out = Json::array();
    for (size_t i = 0; i < cl.num_servers(); ++i) {
      if (!f.json) std::cerr << cmd << ": server " << i + 1 << "/" << cl.num_servers() << " ... " << std::flush;
      auto r = cmd == "checkpoint" ? cl.Checkpoint(static_cast<int>(i), f.name)
               : cmd == "restore"  ? cl.RestoreTable(static_cast<int>(i), f.table, f.name)
                                   : cl.DropCheckpoint(static_cast<int>(i), f.name);
      if (!r.ok()) {
        if (!f.json) std::cerr << "failed\n";
        return Fail(cmd, r.status().WithContext("server " + std::to_string(i)));
      }
      out.push_back(Json::parse(*r));
      if (!f.json) std::cerr << "done (" << out.back().dump() << ")\n";
    }
    std::cout << (f.json ? out.dump() : out.dump(2)) << "\n";
    return 0;
  }
  // Row commands.
  auto t = cl.OpenTable(f.table);
  if (!t.ok()) return Fail(cmd, t.status());
  auto rows = ParseRows(f.rows_list);
  if (!rows.ok()) return Fail(cmd, rows.status());
  const TableSchema& s = (*t)->schema();
  if (cmd == "get") {
    Json values = Json::array();
    std::vector<uint8_t> raw(rows->size() * s.value_bytes());
    if (Status st = (*t)->Pull(*rows, raw.data()); !st.ok()) return Fail(cmd, st);
    for (size_t i = 0; i < rows->size(); ++i) {
      const uint8_t* r = raw.data() + i * s.value_bytes();
      if (s.dtype == DType::kBytes) {
        values.push_back(std::vector<uint8_t>(r, r + s.value_bytes()));
      } else {
        std::vector<float> v(s.dim);
        DecodeRow(s.dtype, s.dim, r, v.data());
        values.push_back(v);
      }
    }
    if (f.json) {
      std::cout << Json{{"rows", *rows}, {"values", values}}.dump() << "\n";
    } else {
      for (size_t i = 0; i < rows->size(); ++i) std::cout << (*rows)[i] << ": " << values[i].dump() << "\n";
    }
    return 0;
  }
  if (cmd == "put") {
    if (s.dtype == DType::kBytes || s.dtype == DType::kFp8E4M3Ue8m0) {
      return Fail(cmd, Status::InvalidArgument("put of " + std::string(DTypeName(s.dtype)) +
                                               " rows takes raw bytes; use import for serving tables"));
    }
    auto v = ReadMatrix(f.values, rows->size(), s.dim);
    if (!v.ok()) return Fail(cmd, v.status());
    std::vector<uint8_t> raw(rows->size() * s.value_bytes());
    for (size_t i = 0; i < rows->size(); ++i) EncodeRow(s.dtype, s.dim, v->data() + i * s.dim, raw.data() + i * s.value_bytes());
    if (Status st = (*t)->Put(*rows, raw.data()); !st.ok()) return Fail(cmd, st);
    std::cout << (f.json ? Json{{"put", rows->size()}}.dump() : "put " + std::to_string(rows->size()) + " rows") << "\n";
    return 0;
  }
  if (cmd == "push") {
    auto g = ReadMatrix(f.grads, rows->size(), s.dim);
    if (!g.ok()) return Fail(cmd, g.status());
    if (Status st = (*t)->Push(*rows, g->data()); !st.ok()) return Fail(cmd, st);
    std::cout << (f.json ? Json{{"pushed", rows->size()}}.dump() : "pushed " + std::to_string(rows->size()) + " rows")
              << "\n";
    return 0;
  }
  return Fail(cmd, Status::InvalidArgument("unknown command"));
}

}  // namespace engram::ctl
