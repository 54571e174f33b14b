# Shared by deploy/local/up and deploy/local/demo: start and stop the local
# stack (a primary and two mirror sites on loopback, each with a cache group
# of two mp-cache nodes) and write a site configuration per site, which the
# site's clients and cache nodes share. Source it; set `state` (a directory)
# and the addresses first, or take the defaults below.

state=${state:-var/local}
primary_listen=${primary_listen:-127.0.0.1:7100}
primary_admin=${primary_admin:-127.0.0.1:7180}
site_a=${site_a:-127.0.0.1:7200}
site_a_admin=${site_a_admin:-127.0.0.1:7280}
site_b=${site_b:-127.0.0.1:7300}
site_b_admin=${site_b_admin:-127.0.0.1:7380}
bin=${bin:-build}
# Cache nodes: site-a on 7400/7401 (admin 7480/7481), site-b on 7410/7411
# (admin 7490/7491); site-b's group asks site-a's first (its regional hub).
cache_base_a=${cache_base_a:-7400}
cache_base_b=${cache_base_b:-7410}
cache_size=${cache_size:-2GiB}

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
  # Replication copies into the site's own bucket, whose alias (site-copy)
  # and URL are in the site configuration (stack_write_client_configs).
  cat >"$state/$1-mirror.yaml" <<YAML
replication:
  site_config: $(realpath -m "$state")/$1.yaml
YAML
  case $1 in
  site-a) "$bin/mirror/mp-mirror" -c "$state/$1-mirror.yaml" --site site-a --upstream "$primary_listen" \
      --data-dir "$state/site-a" --listen "$site_a" --admin "$site_a_admin" \
      2>>"$state/site-a.log" & ;;
  site-b) "$bin/mirror/mp-mirror" -c "$state/$1-mirror.yaml" --site site-b --upstream "$site_a,$primary_listen" \
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

stack_start_cache() { # site-a | site-b, node index 0 | 1
  local site=$1 i=$2 base parent=() listen admin
  if [ "$site" = site-a ]; then base=$cache_base_a; else base=$cache_base_b; parent=(--parent "$site_a"); fi
  listen=127.0.0.1:$((base + i))
  admin=127.0.0.1:$((base + 80 + i))
  "$bin/mirror/mp-cache" -c "$state/$site.yaml" --cache-dir "$state/$site-cache-$i:$cache_size" \
    --listen "$listen" --admin "$admin" "${parent[@]}" 2>>"$state/$site-cache-$i.log" &
  stack_pid[$site-cache-$i]=$!
  echo "${stack_pid[$site-cache-$i]}" >"$state/$site-cache-$i.pid"
  stack_wait_healthy "$site-cache-$i" "$admin"
}

stack_start_caches() {
  local site i
  for site in site-a site-b; do
    for i in 0 1; do stack_start_cache "$site" "$i"; done
  done
}

stack_stop_all() {
  for name in site-b-cache-0 site-b-cache-1 site-a-cache-0 site-a-cache-1 site-b site-a primary; do
    stack_stop "$name"
  done
}

# One mp site configuration per site: the site's mirror first, the primary
# for writes and fallback. The origin bucket is what the primary announces
# (file://STATE/primary/objects on the embedded defaults).
stack_write_client_configs() {
  local site addr
  for site in site-a site-b; do
    if [ "$site" = site-a ]; then addr=$site_a; else addr=$site_b; fi
    cat >"$state/$site.yaml" <<YAML
# Site configuration for $site (written by deploy/local/up): mp and
# libmirrorplane clients read it, and so do the site's mp-cache nodes.
site: $site
mirror: [$addr]
primary: [$primary_listen]
consistency: session
timeout: 2s
session_file: $(realpath -m "$state")/$site.session
# The site's own bucket: replication rules name it as "site-copy".
buckets:
  site-copy:
    url: file://$(realpath -m "$state")/$site-bucket
YAML
    mkdir -p "$state/$site-bucket"
  done
}
