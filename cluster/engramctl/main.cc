// engramctl: the administration tool. `engramctl <command> [--flags]`.
#include <cstring>
#include <iostream>
#include <string>

#include <gflags/gflags.h>

#include "cluster/engramctl/commands.h"

DEFINE_string(spec, "", "Engram spec JSON (reference field names), for hash");
DEFINE_string(tokens, "", "JSON [B][T] array of token ids, for hash");
DEFINE_string(etcd, "", "HOST:PORT of etcd (cluster commands)");
DEFINE_string(cluster, "default", "cluster name (etcd key prefix /engram/<cluster>/)");
DEFINE_string(servers, "", "HOST:PORT[,HOST:PORT...] of the engram-server nodes (position = node id)");
DEFINE_int32(timeout_ms, 10000, "deadline of each request attempt");
DEFINE_bool(json, false, "machine-readable JSON output");
DEFINE_string(name, "", "table name (create-table, drop-table)");
DEFINE_string(table, "", "table name (describe, get, put, push)");
DEFINE_string(rows, "", "create-table: row count; get/put/push: comma-separated row ids");
DEFINE_uint32(dim, 0, "values per row (bytes per row for dtype bytes)");
DEFINE_string(dtype, "f32", "f32, bf16, f16, fp8_e4m3_ue8m0 or bytes");
DEFINE_string(optimizer, "adam", "sgd, adagrad, adam or none");
DEFINE_double(lr, 0.01, "learning rate");
DEFINE_string(init, "normal", "initial values: zeros, normal or uniform");
DEFINE_double(init_scale, 0.02, "normal: sigma; uniform: a in [-a, a)");
DEFINE_uint64(seed, 0, "initialisation seed");
DEFINE_int32(replicas, 0, "create-table: copies of every shard (1 or 2; 0: 2 with --etcd and at least 2 nodes, else 1)");
DEFINE_int64(shard, -1, "move-shard: the virtual shard to move");
DEFINE_int64(to, -1, "move-shard: the destination node id");
DEFINE_int64(node, -1, "drain-node, add-node: the node id");
DEFINE_uint64(dram_bytes, 0, "create-table: DRAM per node for the table's rows; rows beyond it live in the server's "
                             "cold tier (RocksDB under its --data_dir). 0: all rows in DRAM");
DEFINE_uint32(shards, 16, "virtual shards per table");
DEFINE_string(values, "", "JSON list of value rows, for put");
DEFINE_string(grads, "", "JSON list of gradient rows, for push");
DEFINE_string(safetensors, "", "safetensors file, for import and export");
DEFINE_string(tensor, "", "tensor name in the safetensors file (e.g. layers.1.engram.embed.weight)");
DEFINE_string(scale_tensor, "", "fp8 tables: the UE8M0 scale tensor (default: <tensor without .weight>.scale)");

namespace {

constexpr const char* kUsage =
    "usage: engramctl <command> [flags]\n"
    "commands:\n"
    "  hash --spec SPEC.json --tokens TOKENS.json\n"
    "      print {\"<layer>\": [B][T][(max_ngram_size-1)*n_head_per_ngram] global row ids}\n"
    "table commands (all take --servers=HOST:PORT[,...] or --etcd=HOST:PORT [--cluster=NAME], and --json;\n"
    "with --etcd, create-table and drop-table also keep the table's record in etcd):\n"
    "  create-table --name=N --rows=R --dim=D [--dtype=f32|bf16|f16|fp8_e4m3_ue8m0|bytes]\n"
    "               [--optimizer=sgd|adagrad|adam|none] [--lr=X] [--init=zeros|normal|uniform] [--seed=S]\n"
    "               [--dram_bytes=B] [--replicas=1|2]\n"
    "               [--shards=S]\n"
    "  create-table --name=N --spec=SPEC.json   one table per Engram layer: N_layer<L>\n"
    "  drop-table --name=N | list | describe --table=N | stats\n"
    "  get --table=N --rows=1,2,3           values of rows, in the order asked\n"
    "  put --table=N --rows=... --values=FILE.json   set rows (JSON list of rows)\n"
    "  push --table=N --rows=... --grads=FILE.json   apply gradients through the optimizer\n"
    "  import --table=N --safetensors=FILE --tensor=NAME [--scale-tensor=NAME]\n"
    "  export --table=N --safetensors=FILE [--tensor=NAME] [--scale-tensor=NAME]\n"
    "  checkpoint [--name=LABEL]             every server writes a checkpoint now (labeled: kept for restore)\n"
    "  restore --table=N --name=LABEL        roll a table back to the checkpoint labeled LABEL, on every server\n"
    "  drop-checkpoint --name=LABEL          stop keeping the checkpoints labeled LABEL, on every server\n"
    "cluster commands:\n"
    "  status --etcd=HOST:PORT [--cluster=NAME] [--json]   live daemons, leader, tables, shards per node\n"
    "shard administration (--servers=... or --etcd=...; live: clients keep pushing and pulling;\n"
    "a progress bar on stderr; Ctrl-C aborts the move in progress, completed moves stay):\n"
    "  move-shard --table=T --shard=S --to=N   move one virtual shard to node N\n"
    "  drain-node --node=N [--table=T]         move every shard off node N\n"
    "  add-node --node=N [--table=T]           a new live daemon N takes its share\n"
    "  rebalance [--table=T]                   even out shards over the live nodes\n";

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(kUsage);
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  // Accept --scale-tensor as well as --scale_tensor: gflags names use underscores.
  for (int i = 2; i < argc; ++i) {
    if (std::strncmp(argv[i], "--", 2) != 0) continue;
    for (char* p = argv[i] + 2; *p != '\0' && *p != '='; ++p) {
      if (*p == '-') *p = '_';
    }
  }
  // Let gflags see the flags after the command.
  argv[1] = argv[0];
  int sub_argc = argc - 1;
  char** sub_argv = argv + 1;
  gflags::ParseCommandLineFlags(&sub_argc, &sub_argv, true);
  if (sub_argc > 1) {
    std::cerr << "engramctl " << command << ": unexpected argument '" << sub_argv[1] << "'\n";
    return 2;
  }
  if (command == "hash") return engram::ctl::RunHash(FLAGS_spec, FLAGS_tokens);
  if (command == "status") return engram::ctl::RunStatus(FLAGS_etcd, FLAGS_cluster, FLAGS_json, FLAGS_timeout_ms);
  // Every command's flags, in one place.
  engram::ctl::CtlFlags f;
  f.servers = FLAGS_servers;
  f.etcd = FLAGS_etcd;
  f.cluster = FLAGS_cluster;
  f.timeout_ms = FLAGS_timeout_ms;
  f.json = FLAGS_json;
  f.name = FLAGS_name;
  f.table = FLAGS_table;
  f.spec = FLAGS_spec;
  f.dtype = FLAGS_dtype;
  f.optimizer = FLAGS_optimizer;
  f.init = FLAGS_init;
  f.values = FLAGS_values;
  f.grads = FLAGS_grads;
  f.safetensors = FLAGS_safetensors;
  f.tensor = FLAGS_tensor;
  f.scale_tensor = FLAGS_scale_tensor;
  f.dim = FLAGS_dim;
  f.shards = FLAGS_shards;
  f.shards_given = !gflags::GetCommandLineFlagInfoOrDie("shards").is_default;
  f.lr = FLAGS_lr;
  f.init_scale = FLAGS_init_scale;
  f.seed = FLAGS_seed;
  f.dram_bytes = FLAGS_dram_bytes;
  f.replicas = FLAGS_replicas;
  f.shard = FLAGS_shard;
  f.to = FLAGS_to;
  f.node = FLAGS_node;
  static const char* kShardCommands[] = {"move-shard", "drain-node", "add-node", "rebalance"};
  for (const char* c : kShardCommands) {
    if (command == c) return engram::ctl::RunShardCommand(command, f);
  }
  static const char* kTableCommands[] = {"create-table", "drop-table", "list", "describe", "stats",
                                         "get", "put", "push", "import", "export", "checkpoint", "restore",
                                         "drop-checkpoint"};
  for (const char* c : kTableCommands) {
    if (command != c) continue;
    if (command == "create-table") {
      if (!FLAGS_rows.empty()) {
        try {
          f.rows = std::stoull(FLAGS_rows);
        } catch (const std::exception&) {
          std::cerr << "engramctl create-table: --rows must be a row count\n";
          return 2;
        }
      }
    } else {
      f.rows_list = FLAGS_rows;
    }
    return engram::ctl::RunTableCommand(command, f);
  }
  std::cerr << "engramctl: unknown command '" << command << "'\n" << kUsage;
  return 2;
}
