#!/usr/bin/env bash
# Repeats the forced failure scenarios of issue 21 and counts the runs that lost nothing:
# a quick restart of a primary (in memory, durable, on a damaged log), a failover in the middle
# of a move onto the backup's node, and a hung backup (pull and push latency on its healthy
# primary). Each run starts etcd and three real daemons on 127.0.0.1.
# Usage: bench/failure_runs.sh BUILD_DIR [RUNS]   (20 runs: about 7 minutes on 2 cores)
set -uo pipefail
build=${1:-build}
runs=${2:-20}
test_bin="$build/tests/shard_move_test"
out=bench-results
mkdir -p "$out"
for name in AQuicklyRestartedInMemoryPrimaryHandsItsShardsToTheirBackups \
            AQuicklyRestartedDurablePrimaryHandsItsShardsToTheirBackups \
            APrimaryRestartedOnADamagedLogHandsItsShardsToTheirBackups \
            AFailoverMidMoveOntoTheBackupServesTheReplicaNotTheUnfinishedCopy; do
  log="$out/failure_$name.log"
  "$test_bin" --gtest_filter="ClusterKillTest.$name" --gtest_repeat="$runs" >"$log" 2>&1
  ok=$(grep -c "^\[       OK \] ClusterKillTest.$name" "$log")
  echo "$name: $ok of $runs runs lost no acknowledged push"
done
hung_runs=$(( runs < 10 ? runs : 10 ))
log="$out/failure_hung_backup.log"
"$test_bin" --gtest_filter="ClusterKillTest.AHungBackupDoesNotFreezeItsHealthyPrimary" --gtest_repeat="$hung_runs" >"$log" 2>&1
ok=$(grep -c "^\[       OK \] ClusterKillTest.AHungBackup" "$log")
echo "AHungBackupDoesNotFreezeItsHealthyPrimary: $ok of $hung_runs runs passed"
grep -E "^(worst pull|pushes waiting)" "$log"
