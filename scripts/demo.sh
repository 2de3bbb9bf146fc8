#!/usr/bin/env bash
# make demo: a local two-node engram-ps cluster plus a synthetic training loop.
# Starts two engram-server daemons on 127.0.0.1 (ephemeral ports), creates the Engram tables
# of the reference demo config (vocab sizes divided by SCALE), trains with layer-ahead prefetch,
# stops the daemons. The last stdout line is the training loop's JSON summary.
# Usage: scripts/demo.sh BUILD_DIR [SCALE] [extra engram-train-demo flags...]
set -euo pipefail
build=${1:-build}
scale=${2:-16}
shift $(( $# >= 2 ? 2 : $# ))
tmp=$(mktemp -d /tmp/engram-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

servers=""
for node in 0 1; do
  "$build/ps/engram-server" --listen=127.0.0.1:0 --admin_listen=127.0.0.1:0 --node_id=$node \
    --data_dir="$tmp/node$node" --port_file="$tmp/ports$node" 2>"$tmp/server$node.log" &
  pids+=($!)
done
for node in 0 1; do
  for _ in $(seq 1 300); do [ -s "$tmp/ports$node" ] && break; sleep 0.05; done
  if [ ! -s "$tmp/ports$node" ]; then
    echo "demo: engram-server node $node did not start within 15 s:" >&2
    cat "$tmp/server$node.log" >&2
    exit 1
  fi
  read -r data admin < "$tmp/ports$node"
  servers="${servers:+$servers,}127.0.0.1:$data"
  echo "demo: node $node serving on 127.0.0.1:$data (admin http://127.0.0.1:$admin/metrics)" >&2
done

vocab=$(( 646400 / scale ))
cat > "$tmp/spec.json" <<JSON
{"engram_vocab_size": [$vocab, $vocab], "max_ngram_size": 3, "n_embed_per_ngram": 512,
 "n_head_per_ngram": 8, "layer_ids": [1, 15], "pad_id": 2, "seed": 0,
 "compressed_vocab_size": 128000}
JSON
"$build/cluster/engramctl/engramctl" create-table --servers="$servers" --name=engram --spec="$tmp/spec.json" \
  --dtype=f32 --optimizer=adam --lr=0.003 --init=normal --init_scale=0.02 --shards=16 >&2
"$build/client/examples/engram-train-demo" --servers="$servers" --spec="$tmp/spec.json" --table_prefix=engram "$@"
