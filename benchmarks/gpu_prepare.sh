#!/usr/bin/env bash
# Prepare, here, what a lent GPU machine cannot fetch (it has no network), from the repository root:
#
#     bash benchmarks/gpu_prepare.sh            # onnxruntime-gpu for the device's Python, in parts
#     bash benchmarks/gpu_prepare.sh --bundles  # also the small trained bundles (needs the export extra)
#
# The device machine's image has Python 3.12 with torch, onnx, numpy and opencv, but onnxruntime
# without the CUDA provider. onnxruntime-gpu's wheel (about 255 MB; 350 MB unpacked) is more than
# one call carries (64 MiB with the checkout), so its contents are packed with xz (about 200 MB)
# and split into parts of PART_MB (default 36) in .gpu/parts/, checked by .gpu/ort.sha256.
# Carry one part per call, back to back (a machine idle for 30 s is given back, and /tmp with it);
# each `--stage` call copies what it carried to /tmp; the last part travels with the run itself,
# which assembles and checks them (benchmarks/gpu_run.sh):
#
#     run(carry=[".gpu/parts/part-aa"], command="bash benchmarks/gpu_run.sh --stage")
#     ... part-ab .. part-ae the same way (.gpu/bundles, if made, in a call of its own) ...
#     run(carry=[".gpu/ort.sha256", ".gpu/parts/part-af"], command="bash benchmarks/gpu_run.sh", timeout_s=600)
#
# Environment: ORT_VERSION (default: the one installed here), GPU_PY (default 3.12), PART_MB, XZ_LEVEL (9).
set -eu
cd "$(dirname "$0")/.."
ORT_VERSION=${ORT_VERSION:-$(python3 -c "from importlib.metadata import version; print(version('onnxruntime-gpu'))")}
GPU_PY=${GPU_PY:-3.12}
PART_MB=${PART_MB:-36}
XZ_LEVEL=${XZ_LEVEL:-9}
grep -qx '/.gpu/' .gitignore 2>/dev/null || grep -qx '/.gpu/' .git/info/exclude 2>/dev/null \
    || echo '/.gpu/' >> "$(git rev-parse --git-path info/exclude)"
rm -rf .gpu/parts .gpu/dl && mkdir -p .gpu/parts .gpu/dl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$GPU_PY" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    -d .gpu/dl "onnxruntime-gpu==$ORT_VERSION"
wheel=$(ls .gpu/dl/*.whl)
unpacked=$(mktemp -d)
python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$wheel" "$unpacked"
tar -C "$unpacked" -cf - . | xz -T0 "-$XZ_LEVEL" > .gpu/dl/ort.tar.xz
rm -rf "$unpacked"
(cd .gpu/dl && sha256sum ort.tar.xz) > .gpu/ort.sha256
split -b "${PART_MB}M" .gpu/dl/ort.tar.xz .gpu/parts/part-
rm -rf .gpu/dl
echo "$(basename "$wheel"): $(ls .gpu/parts | wc -l) parts in .gpu/parts ($(du -sh .gpu/parts | cut -f1))"

if [ "${1:-}" = "--bundles" ]; then
    # The small trained bundles and their FP16 / INT8 versions, made here (onnxsim included) so that
    # the device exports only the full-size ones; reused by gpu_check.py when config and weights match.
    python3 benchmarks/gpu_check.py --device cpu --only method,fp16,int8 --full none --frames 2 \
        --bundle-dir .gpu/bundles --out-dir .gpu --out prepare.md > /dev/null
    echo "bundles: $(du -sh .gpu/bundles | cut -f1) in .gpu/bundles (carry it in a --stage call of its own)"
fi
