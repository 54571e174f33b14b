# Shared by deploy/local/up and deploy/local/demo: start and stop the local
# stack (a primary and two mirror sites on loopback) and write a site
# configuration for the mp CLI per site. Source it; set `state` (a directory)
# and the addresses first, or take the defaults below.

state=${state:-var/local}
primary_listen=${primary_listen:-127.0.0.1:7100}
primary_admin=${primary_admin:-127.0.0.1:7180}
site_a=${site_a:-127.0.0.1:7200}
site_a_admin=${site_a_admin:-127.0.0.1:7280}
site_b=${site_b:-127.0.0.1:7300}
site_b_admin=${site_b_admin:-127.0.0.1:7380}
bin=${bin:-build}

declare -A stack_pid=()

stack_wait_healthy() { # name admin
  local pid=${stack_pid[$1]}
  for _ in $(seq 1 150); do
    curl -fsS "http://$2/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { echo "$1 failed to start:" >&2; tail -20 "$state/$1.log" >&2; return 1; }
    sleep 0.1
  done
  echo "$1 did not become healthy; see $state/$1.log" >&2
  return 1
}

stack_start_primary() {
  "$bin/primary/mp-primary" --data-dir "$state/primary" --listen "$primary_listen" \
    --admin "$primary_admin" 2>>"$state/primary.log" &
  stack_pid[primary]=$!
  echo "${stack_pid[primary]}" >"$state/primary.pid"
  stack_wait_healthy primary "$primary_admin"
}

stack_start_site() { # site-a | site-b
  case $1 in
  site-a) "$bin/mirror/mp-mirror" --site site-a --upstream "$primary_listen" \
      --data-dir "$state/site-a" --listen "$site_a" --admin "$site_a_admin" \
      2>>"$state/site-a.log" & ;;
  site-b) "$bin/mirror/mp-mirror" --site site-b --upstream "$site_a,$primary_listen" \
      --data-dir "$state/site-b" --listen "$site_b" --admin "$site_b_admin" \
      2>>"$state/site-b.log" & ;;
  esac
  stack_pid[$1]=$!
  echo "${stack_pid[$1]}" >"$state/$1.pid"
  if [ "$1" = site-a ]; then stack_wait_healthy site-a "$site_a_admin"
  else stack_wait_healthy site-b "$site_b_admin"; fi
}

stack_stop() { # name: SIGTERM, then wait for it
  local pid=${stack_pid[$1]:-}
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "stack_pid[$1]"
  rm -f "$state/$1.pid"
}

stack_stop_all() {
  for name in site-b site-a primary; do stack_stop "$name"; done
}

# One mp site configuration per site: the site's mirror first, the primary
# for writes and fallback. The origin bucket is what the primary announces
# (file://STATE/primary/objects on the embedded defaults).
stack_write_client_configs() {
  local site addr
  for site in site-a site-b; do
    if [ "$site" = site-a ]; then addr=$site_a; else addr=$site_b; fi
    cat >"$state/$site.yaml" <<YAML
# mp site configuration for $site (written by deploy/local/up)
mirror: [$addr]
primary: [$primary_listen]
consistency: session
timeout: 2s
session_file: $PWD/$state/$site.session
YAML
  done
}
