#!/usr/bin/env bash
# The one command for a lent GPU machine, from the repository root:
#
#     bash benchmarks/gpu_run.sh [gpu_check.py options]
#     bash benchmarks/gpu_run.sh --stage     # only copy what this call carried (.gpu/parts/*, .gpu/bundles) to /tmp
#
# It prepares Python without the network and runs benchmarks/gpu_check.py under a hard timeout:
# 1. python3 is the machine's (it must have numpy, opencv, onnx, and torch to export bundles);
#    vss-edge is installed from this checkout with no dependencies and no index into /tmp/vss_site.
# 2. onnxruntime: the machine's is used if it lists the CUDA provider. Otherwise onnxruntime-gpu goes
#    into /tmp/vss_site from a wheel in .gpu/, or from the xz parts benchmarks/gpu_prepare.sh made
#    (.gpu/parts/ and /tmp/ort_parts/, where earlier --stage calls left theirs: one call carries at
#    most 64 MiB, the wheel is about 255 MB), checked against .gpu/ort.sha256.
# 3. bundles carried in .gpu/bundles/ (this call or a --stage call) are reused from
#    /tmp/vss_edge_gpu_check; the others are exported there (torch on the machine).
# The report lands in benchmarks/results/gpu_<gpu>.md/.json and, where $OUT is set, in $OUT too.
# Its code line comes from the machine's copy of .git, which has been seen stale: pass the commit in,
#     run(command="VSS_EDGE_CODE=<git rev-parse --short HEAD, here> bash benchmarks/gpu_run.sh ...")
set -u
cd "$(dirname "$0")/.."
SITE=/tmp/vss_site
BUNDLES=/tmp/vss_edge_gpu_check
LIMIT=${GPU_CHECK_TIMEOUT:-540}   # seconds for gpu_check.py; its own --budget-s (420 s) stops earlier
mkdir -p "$SITE" /tmp/ort_parts "$BUNDLES"
cp -n .gpu/parts/* /tmp/ort_parts/ 2>/dev/null
[ -d .gpu/bundles ] && cp -rn .gpu/bundles/. "$BUNDLES"/
if [ "${1:-}" = "--stage" ]; then
    echo "gpu_run: staged $(ls /tmp/ort_parts | wc -l) onnxruntime part(s), $(ls "$BUNDLES" | wc -l) bundle folder(s)"
    exit 0
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
pip() { python3 -m pip install -q --no-deps --no-index --no-compile --no-cache-dir --upgrade --target "$SITE" "$@"; }

if ! (cd /tmp && python3 -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())") 2>/dev/null; then
    wheel=$(ls .gpu/*.whl 2>/dev/null | head -1)
    sums=$(pwd)/.gpu/ort.sha256
    if [ -n "$wheel" ]; then
        echo "gpu_run: installing $(basename "$wheel")"; pip "$wheel" || echo "gpu_run: the wheel did not install"
    elif [ -f "$sums" ]; then
        cat /tmp/ort_parts/part-* > /tmp/ort.tar.xz
        if (cd /tmp && sha256sum -c --quiet "$sums"); then
            python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" /tmp/ort.tar.xz "$SITE" \
                && echo "gpu_run: onnxruntime-gpu unpacked into $SITE"
        else
            echo "gpu_run: the onnxruntime-gpu parts in /tmp/ort_parts are incomplete ($(ls /tmp/ort_parts | wc -l) parts)"
        fi
    else
        echo "gpu_run: no onnxruntime with CUDA here and none carried (benchmarks/gpu_prepare.sh): the check will say so"
    fi
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-index --no-cache-dir --target "$SITE" --upgrade . \
    || { echo "gpu_run: vss-edge did not install"; exit 2; }
(cd /tmp && python3 -c "import onnxruntime as o, vss_edge.runtime; print('gpu_run: onnxruntime', o.__version__, \
    o.get_available_providers())") || { echo "gpu_run: vss-edge does not import"; exit 2; }

# Does CUDA load with the libraries onnxruntime finds itself, or only with those PyTorch loads?
cuda_kept() { python3 benchmarks/gpu_check.py --probe "$@" 2>/dev/null | python3 -c "import json, sys
rows = json.loads(sys.stdin.read().splitlines()[-1])['providers']
sys.exit(not any(r['provider'] == 'CUDAExecutionProvider' and r.get('kept') for r in rows))"; }
extra=()
if ! cuda_kept && cuda_kept --torch-libs; then
    echo "gpu_run: CUDA loads only with PyTorch's libraries: --torch-libs"; extra=(--torch-libs)
fi
timeout -s TERM -k 20 "$LIMIT" python3 benchmarks/gpu_check.py --bundle-dir "$BUNDLES" "${extra[@]}" "$@" 2>&1 \
    | tee /tmp/gpu_check.log
status=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then
    cp benchmarks/results/gpu_*.md benchmarks/results/gpu_*.json /tmp/gpu_check.log "$OUT"/ 2>/dev/null
fi
echo "gpu_run: gpu_check.py exited $status"
exit "$status"
