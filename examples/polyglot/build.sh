#!/usr/bin/env bash
# Builds the JavaScript (componentize-js via jco) and Python (componentize-py) hello
# components into examples/polyglot/build/. Needs node/npm and python3 with venv; fetches
# the tools from npm and PyPI. About 75 s on 2 cores.
#
# Why the WIT juggling: componentize-js 0.22/0.23's engine is built against WASI 0.2.10,
# componentize-py takes any 0.2.x; both get the wasi:http WIT that wasmtime-wasi-http
# 48.0.8 ships (from the local cargo registry), re-versioned to 0.2.10 for JavaScript.
# The resulting components mix WASI 0.2.9, 0.2.10 and 0.2.12 imports, which is the point.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p build && cd build
REG=$(ls -d ~/.cargo/registry/src/*/wasmtime-wasi-http-48.0.8/wit/deps 2>/dev/null | head -1)
if [ -z "$REG" ]; then
  # `cargo fetch` leaves the crate packed; unpack just its WIT files.
  crate=$(ls ~/.cargo/registry/cache/*/wasmtime-wasi-http-48.0.8.crate 2>/dev/null | head -1)
  if [ -z "$crate" ]; then
    echo "wasmtime-wasi-http 48.0.8 is not in ~/.cargo/registry: run 'cargo fetch' in the repository first" >&2
    exit 1
  fi
  mkdir -p crate && tar -xzf "$crate" -C crate wasmtime-wasi-http-48.0.8/wit
  REG=$PWD/crate/wasmtime-wasi-http-48.0.8/wit/deps
fi

mkdir -p js
cat > js/package.json <<'JSON'
{ "name": "runway-polyglot-js", "private": true, "type": "module",
  "dependencies": { "@bytecodealliance/jco": "1.35.0" },
  "overrides": { "@bytecodealliance/preview2-shim": "0.26.0" } }
JSON
(cd js && npm install --no-fund --no-audit --loglevel=error)
[ -x venv/bin/componentize-py ] || { python3 -m venv venv && venv/bin/pip install -q componentize-py==0.25.1; }

rm -rf wit wit-js
mkdir -p wit/deps && cp "$REG"/*.wit wit/deps/ && cp ../src/world-py.wit wit/world.wit
mkdir -p wit-js/deps
for f in cli filesystem http random; do sed 's/0\.2\.12/0.2.10/g' "$REG/$f.wit" > wit-js/deps/$f.wit; done
builtin=js/node_modules/@bytecodealliance/jco/lib/wit/builtin/0.2.10
for f in io clocks sockets; do cp "$builtin/wasi-$f/package.wit" wit-js/deps/$f.wit; done
cp ../src/world-js.wit wit-js/world.wit

js/node_modules/.bin/jco componentize ../src/app.js --wit wit-js --world-name hello -o hello-js.wasm
mkdir -p py && cp ../src/app.py py/app.py
(cd py && ../venv/bin/componentize-py -d ../wit -w wasi:http/proxy@0.2.12 componentize app -o ../hello-py.wasm)
ls -l hello-js.wasm hello-py.wasm
