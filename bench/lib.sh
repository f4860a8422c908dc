# Shared by bench/run and bench/profile: tools, ports, processes started by PID and killed by
# PID at exit, nginx and proxy configs. Everything listens on 127.0.0.1 only.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/release/b24-audit-proxy"
NPROC="$(nproc)"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# Installs the Debian packages providing the given commands, when missing. `apt-get update` runs
# once, and only when something has to be installed.
ensure_tools() { # cmd:package ...
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 ||
    die "missing ${missing[*]}: install them (or run as root with apt-get)"
  log "installing ${missing[*]} (apt-get)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build_release() {
  log "cargo build --release --locked"
  (cd "$ROOT" && cargo build --release --locked --quiet) || die "build failed"
  [ -x "$BIN" ] || die "no binary at $BIN"
}

# A work directory on the same (disk) filesystem as the repo, so the audit database is on disk
# and not on a tmpfs.
make_workdir() { # name
  mkdir -p "$TARGET_DIR"
  W="$(mktemp -d "$TARGET_DIR/$1.XXXXXX")"
  # nginx's workers run as an unprivileged user when started by root: they must read the body.
  chmod 755 "$W"
  mkdir -p "$W/logs" "$W/results"
}

# N free loopback ports (bound together, then released).
free_ports() { # n
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

# --- processes: started here, remembered by PID, killed by PID -----------------------------
PIDS=()
NAMES=()
start_bg() { # name cmd...
  local name="$1"; shift
  "$@" >"$W/logs/$name.log" 2>&1 &
  PIDS+=("$!")
  NAMES+=("$name")
  eval "PID_${name//-/_}=$!"
}

pid_of() { local v="PID_${1//-/_}"; printf '%s' "${!v}"; }

# Stops one process started by start_bg: SIGTERM, up to `grace` seconds, then SIGKILL.
stop_pid() { # pid [grace_s]
  local pid="$1" grace="${2:-10}" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_named() { # name [grace]
  local pid i
  pid="$(pid_of "$1")"
  [ -n "$pid" ] && stop_pid "$pid" "${2:-10}"
  for i in "${!PIDS[@]}"; do
    [ "${PIDS[$i]}" = "$pid" ] && unset 'PIDS[i]' 'NAMES[i]'
  done
  return 0
}

cleanup() {
  local idx=("${!PIDS[@]}") k
  for ((k = ${#idx[@]} - 1; k >= 0; k--)); do
    stop_pid "${PIDS[${idx[$k]}]}" 5
  done
  PIDS=()
  NAMES=()
}

on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  cleanup
  if [ "$rc" -ne 0 ] && [ -n "${W:-}" ]; then
    printf 'bench: failed (exit %s); logs kept in %s/logs\n' "$rc" "$W" >&2
  elif [ -n "${W:-}" ] && [ -z "${BENCH_KEEP:-}" ]; then
    rm -rf "$W"
  fi
  exit "$rc"
}

install_traps() {
  trap on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

wait_port() { # port [timeout_s]
  local port="$1" t="${2:-20}" i
  for ((i = 0; i < t * 20; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  die "nothing listening on 127.0.0.1:$port after ${t}s (see $W/logs)"
}

# --- nginx --------------------------------------------------------------------------------------
# Common head of both nginx configs: own prefix, pid file, temp paths, no access log.
nginx_head() { # name workers
  local d="$W/nginx-$1"
  mkdir -p "$d"
  cat <<EOF
daemon off;
master_process on;
worker_processes $2;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $d/client_body;
  proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi;
  scgi_temp_path $d/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
EOF
}

# nginx answering the portal path with a fixed body: one file, kept open (open_file_cache) and
# sent with sendfile; no ETag or conditional handling.
nginx_static_conf() { # port body_file
  nginx_head static "$NPROC"
  cat <<EOF
  sendfile on;
  tcp_nopush on;
  open_file_cache max=16 inactive=600s;
  open_file_cache_valid 600s;
  etag off;
  if_modified_since off;
  server {
    listen 127.0.0.1:$1 reuseport;
    location = /rest/1/sim-secret-1/crm.deal.list {
      default_type "application/json; charset=utf-8";
      alias $2;
    }
    location / { return 404; }
  }
}
EOF
}

# nginx reverse proxy with a keep-alive pool to the upstream.
nginx_proxy_conf() { # port upstream_port
  nginx_head proxy "$NPROC"
  cat <<EOF
  upstream portal {
    server 127.0.0.1:$2;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$1 reuseport;
    location / {
      proxy_pass http://portal;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
}

start_nginx() { # name conf_file port
  nginx -t -q -p "$W/nginx-$1" -e "$W/nginx-$1/error.log" -c "$2" >"$W/logs/nginx-$1-test.log" 2>&1 ||
    die "nginx config $2 invalid: $(cat "$W/logs/nginx-$1-test.log")"
  start_bg "nginx-$1" nginx -p "$W/nginx-$1" -e "$W/nginx-$1/error.log" -c "$2"
  wait_port "$3"
}

# --- the proxy ----------------------------------------------------------------------------------
proxy_conf() { # name listen_port admin_port upstream_port [log_level] [server_lines]
  mkdir -p "$W/$1"
  cat >"$W/$1/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:$2"
${6:-}
[upstream]
url = "http://127.0.0.1:$4"
[audit]
database = "$W/$1/audit.db"
[admin]
listen = "127.0.0.1:$3"
[log]
level = "${5:-warn}"
EOF
  printf '%s' "$W/$1/proxy.toml"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# Creates `n` workplaces on the simulator (REST crm.automatedsolution.add, distinct typeIds) and
# prints their ids, one per line.
create_workplaces() { # sim_port n
  python3 - "$1" "$2" <<'EOF'
import json, sys, urllib.request
port, n = int(sys.argv[1]), int(sys.argv[2])
url = f"http://127.0.0.1:{port}/rest/1/sim-secret-1/crm.automatedsolution.add"
for i in range(n):
    body = json.dumps({"fields": {"title": f"Bench workplace {i}", "typeIds": [100000 + i]}}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        print(json.load(r)["result"]["automatedSolution"]["id"])
EOF
}

# A wrk script POSTing JSON bodies, cycling over the workplaces in `ids_file`:
#   update: {"id":ID,"fields":{"title":...}}  a rename; the bindings stay as they are
#   bind:   {"id":ID,"fields":{"title":...,"typeIds":[T]}}  binds a smart process the workplace
#           does not hold, so the proxy also lists every workplace to find the type's owner
#   get:    {"id":ID}
write_post_lua() { # kind ids_file out
  local ids
  ids="$(paste -sd, "$2")"
  cat >"$3" <<EOF
local kind = "$1"
local ids = { $ids }
local reqs = {}
local n = 0
function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  for i, id in ipairs(ids) do
    local body
    if kind == "update" then
      body = string.format('{"id":%d,"fields":{"title":"Bench workplace %d"}}', id, id)
    elseif kind == "bind" then
      body = string.format('{"id":%d,"fields":{"title":"Bench workplace %d","typeIds":[%d]}}', id, id, 200000 + i)
    else
      body = string.format('{"id":%d}', id)
    end
    reqs[i] = wrk.format("POST", nil, headers, body)
  end
end
function request()
  n = n % #reqs + 1
  return reqs[n]
end
EOF
}
