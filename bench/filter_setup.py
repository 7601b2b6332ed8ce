"""What each run of the filter benchmark is made of (pure): the Sluice policy, the equivalent Lua
filter, the Envoy bootstrap of every variant, the nginx upstream's config, and the wrk report
script with its parser. `filter_bench.py` runs them; `test_filter_bench.py` tests them.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WASM_DIR = REPO_ROOT / "target" / "wasm32-wasip1" / "release"
SLUICE_WASM = WASM_DIR / "sluice_filter.wasm"
NOOP_WASM = WASM_DIR / "sluice_bench_noop_filter.wasm"
# The native builds (Envoy dynamic modules), built with the unwinding `release-native` profile.
NATIVE_DIR = REPO_ROOT / "target" / "release-native"
SLUICE_NATIVE = NATIVE_DIR / "libsluice_filter_native.so"
NOOP_NATIVE = NATIVE_DIR / "libsluice_bench_noop_native.so"
OUT_JSON = REPO_ROOT / "target" / "bench" / "filter.json"
# Other builds of the Sluice Wasm filter, compared in the same run (`--wasm NAME=PATH`): variant
# `sluice@NAME` runs the module at PATH with the `sluice` variant's policy and routes.
BUILD_PREFIX = "sluice@"

VARIANTS = ("plain", "weighted", "noop-wasm", "sluice", "lua", "noop-native", "sluice-native")
# Variants whose module file must exist (Envoy's validate mode checks it too).
MODULES = {
    "noop-wasm": NOOP_WASM,
    "sluice": SLUICE_WASM,
    "noop-native": NOOP_NATIVE,
    "sluice-native": SLUICE_NATIVE,
}

HOST = "demo.example"
STABLE_HASH = "aaaa1111"
CANARY_HASH = "bbbb2222"
ROUTING_HEADER = "x-sluice-hash"
STICKY_HEADER = "x-user-id"
STICKY_VALUE = "user-42"
# The header route in the policy; benchmark requests do not match it, the sanity check does.
HEADER_ROUTE_NAME = "x-canary"
HEADER_ROUTE_VALUE = "always"
# Each route adds this response header naming itself, so the sanity check sees which one matched.
ROUTE_HEADER = "x-bench-route"
STABLE_CLUSTER = "demo-stable"
CANARY_CLUSTER = "demo-canary"

# The same header set for every variant, so they all parse the same request.
REQUEST_HEADERS = {"Host": HOST, STICKY_HEADER: STICKY_VALUE}



class BenchError(Exception):
    """A benchmark step failed; the message says which and why."""


def sluice_policy() -> dict:
    """The `sluice.v1.FilterPolicy` (proto3 JSON) both the Sluice and the Lua variant implement."""
    return {
        "routingHeader": ROUTING_HEADER,
        "rollouts": [
            {
                "name": "default/demo",
                "hosts": [HOST],
                "versions": [STABLE_HASH, CANARY_HASH],
                "stableHash": STABLE_HASH,
                "canaryHash": CANARY_HASH,
                "canaryWeightBp": 5000,
                "headerRoutes": [
                    {
                        "name": "always-canary",
                        "matches": [{"name": HEADER_ROUTE_NAME, "exact": HEADER_ROUTE_VALUE}],
                        "canary": True,
                    }
                ],
                "stickiness": {"header": STICKY_HEADER},
            }
        ],
    }


def _lua_string(s: str) -> str:
    return json.dumps(s)  # a JSON string of printable ASCII is a valid Lua string literal


def lua_rollouts_table(policy: dict) -> str:
    """Translate the policy into the Lua table the Lua filter reads (host -> rollout)."""
    entries = []
    for rollout in policy["rollouts"]:
        canary = rollout.get("canaryHash", "")
        routes = []
        for route in rollout.get("headerRoutes", []):
            target = canary if route.get("canary") else route["hash"]
            matches = []
            for m in route["matches"]:
                name = _lua_string(m["name"].lower())
                if "exact" in m:
                    matches.append(f'{{name = {name}, kind = "exact", value = {_lua_string(m["exact"])}}}')
                elif "prefix" in m:
                    matches.append(f'{{name = {name}, kind = "prefix", value = {_lua_string(m["prefix"])}}}')
                elif m.get("present"):
                    matches.append(f'{{name = {name}, kind = "present"}}')
                else:
                    raise BenchError(
                        f"header route {route['name']!r}: the Lua variant supports exact, prefix and present only"
                    )
            routes.append(f"{{target = {_lua_string(target)}, matches = {{{', '.join(matches)}}}}}")
        sticky = rollout.get("stickiness", {}).get("header")
        body = (
            f"stable = {_lua_string(rollout['stableHash'])}, "
            f"canary = {_lua_string(canary) if canary else 'nil'}, "
            f"weight = {int(rollout.get('canaryWeightBp', 0))}, "
            f"sticky_header = {_lua_string(sticky.lower()) if sticky else 'nil'}, "
            f"routes = {{{', '.join(routes)}}}"
        )
        for host in rollout["hosts"]:
            entries.append(f"  [{_lua_string(host.lower())}] = {{{body}}},")
    return "{\n" + "\n".join(entries) + "\n}"


# The Lua counterpart of the Sluice filter's decision: remove the client's internal header, look
# the host up, header routes in order (AND within a route), then the sticky bucket vs the weight,
# then a random draw; set the internal header and clear the route cache so Envoy re-routes.
LUA_FILTER_TEMPLATE = """\
local ROUTING_HEADER = @ROUTING_HEADER@
local ROLLOUTS = @ROLLOUTS@

-- FNV-1a (32 bit) of the key, as an unsigned number, into [0, 10000). LuaJIT numbers are doubles:
-- h * 16777619 is split into (h << 24) + h * 403 so every step stays exact before tobit wraps it.
local function bucket_of(key)
  local h = bit.tobit(2166136261)
  for i = 1, #key do
    h = bit.bxor(h, string.byte(key, i))
    h = bit.tobit(bit.lshift(h, 24) + h * 403)
  end
  if h < 0 then h = h + 4294967296 end
  return h % 10000
end

local function route_matches(headers, route)
  for _, m in ipairs(route.matches) do
    local v = headers:get(m.name)
    if v == nil then return false end
    if m.kind == "exact" and v ~= m.value then return false end
    if m.kind == "prefix" and string.sub(v, 1, #m.value) ~= m.value then return false end
  end
  return true
end

function envoy_on_request(handle)
  local headers = handle:headers()
  headers:remove(ROUTING_HEADER)
  local authority = headers:get(":authority")
  if authority == nil then return end
  local rollout = ROLLOUTS[string.lower(string.match(authority, "^[^:]*"))]
  if rollout == nil then return end
  local target = nil
  for _, route in ipairs(rollout.routes) do
    if route_matches(headers, route) then target = route.target break end
  end
  if target == nil then
    if rollout.canary == nil then
      target = rollout.stable
    else
      local key = rollout.sticky_header and headers:get(rollout.sticky_header)
      local bucket
      if key ~= nil then bucket = bucket_of(key) else bucket = math.random(0, 9999) end
      if bucket < rollout.weight then target = rollout.canary else target = rollout.stable end
    end
  end
  headers:replace(ROUTING_HEADER, target)
  handle:clearRouteCache()
end
"""


def lua_filter_source(policy: dict) -> str:
    return LUA_FILTER_TEMPLATE.replace("@ROUTING_HEADER@", _lua_string(policy["routingHeader"])).replace(
        "@ROLLOUTS@", lua_rollouts_table(policy)
    )


def _socket_address(port: int) -> dict:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _cluster(name: str, upstream_port: int) -> dict:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(upstream_port)}}]}],
        },
    }


def _named_route(route_name: str, action: dict, headers: list | None = None) -> dict:
    match: dict = {"prefix": "/"}
    if headers:
        match["headers"] = headers
    return {
        "name": route_name,
        "match": match,
        "route": action,
        "response_headers_to_add": [{"header": {"key": ROUTE_HEADER, "value": route_name}}],
    }


def _weighted_action() -> dict:
    return {
        "weighted_clusters": {
            "clusters": [{"name": STABLE_CLUSTER, "weight": 50}, {"name": CANARY_CLUSTER, "weight": 50}]
        }
    }


def base_variant(variant: str) -> str:
    """`sluice` for a `sluice@NAME` build, the variant itself otherwise."""
    return "sluice" if variant.startswith(BUILD_PREFIX) else variant


def routes_for(variant: str) -> list[dict]:
    """The route list of a variant: what Envoy's router sees after the filters ran."""
    variant = base_variant(variant)
    if variant in ("plain", "noop-wasm", "noop-native"):
        return [_named_route("plain", {"cluster": STABLE_CLUSTER})]
    if variant == "weighted":
        return [_named_route("fallback", _weighted_action())]
    if variant in ("sluice", "lua", "sluice-native"):
        by_hash = [
            _named_route(
                version,
                {"cluster": cluster},
                headers=[{"name": ROUTING_HEADER, "string_match": {"exact": hash_}}],
            )
            for version, cluster, hash_ in (
                ("stable", STABLE_CLUSTER, STABLE_HASH),
                ("canary", CANARY_CLUSTER, CANARY_HASH),
            )
        ]
        return by_hash + [_named_route("fallback", _weighted_action())]
    raise BenchError(f"unknown variant {variant!r}")


def _wasm_filter(name: str, wasm: Path, configuration: str | None) -> dict:
    plugin: dict = {
        "name": name,
        "vm_config": {
            "vm_id": name,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": str(wasm)}},
        },
    }
    if configuration is not None:
        plugin["configuration"] = {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": configuration,
        }
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": plugin},
    }


def _native_filter(module: Path, configuration: str) -> dict:
    """An Envoy dynamic-module HTTP filter loading `module` (a file), with a string config."""
    return {
        "name": "envoy.filters.http.dynamic_modules",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {
                "module": {"local": {"filename": str(module)}},
                "metrics_namespace": "wasmcustom",
            },
            "filter_name": "sluice",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": configuration},
        },
    }


def filters_for(variant: str, builds: dict[str, Path] | None = None) -> list[dict]:
    """The HTTP filters a variant runs before the router; `builds` maps the NAME of a
    `sluice@NAME` variant to its .wasm file."""
    if variant.startswith(BUILD_PREFIX):
        name = variant[len(BUILD_PREFIX) :]
        if builds is None or name not in builds:
            raise BenchError(f"{variant}: no module given for build {name!r} (--wasm {name}=PATH)")
        return [_wasm_filter("sluice", builds[name], json.dumps(sluice_policy(), separators=(",", ":")))]
    if variant in ("plain", "weighted"):
        return []
    if variant == "noop-wasm":
        return [_wasm_filter("noop", NOOP_WASM, None)]
    if variant == "sluice":
        return [_wasm_filter("sluice", SLUICE_WASM, json.dumps(sluice_policy(), separators=(",", ":")))]
    if variant == "noop-native":
        return [_native_filter(NOOP_NATIVE, "")]
    if variant == "sluice-native":
        return [_native_filter(SLUICE_NATIVE, json.dumps(sluice_policy(), separators=(",", ":")))]
    if variant == "lua":
        return [
            {
                "name": "envoy.filters.http.lua",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                    "default_source_code": {"inline_string": lua_filter_source(sluice_policy())},
                },
            }
        ]
    raise BenchError(f"unknown variant {variant!r}")


def envoy_config(variant: str, upstream_port: int, builds: dict[str, Path] | None = None) -> dict:
    """A complete Envoy bootstrap for one variant; Envoy picks its own listener and admin ports."""
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "bench",
        "route_config": {
            "name": "bench",
            "virtual_hosts": [{"name": "demo", "domains": ["*"], "routes": routes_for(variant)}],
        },
        "http_filters": filters_for(variant, builds) + [router],
    }
    return {
        "admin": {"address": _socket_address(0)},
        "static_resources": {
            "listeners": [
                {
                    "name": "bench",
                    "address": _socket_address(0),
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                            ]
                        }
                    ],
                }
            ],
            "clusters": [_cluster(STABLE_CLUSTER, upstream_port), _cluster(CANARY_CLUSTER, upstream_port)],
        },
    }


def expected_routes(variant: str) -> tuple[set[str], str | None]:
    """(routes a benchmark request may take, the route a header-route request must take)."""
    variant = base_variant(variant)
    if variant in ("plain", "noop-wasm", "noop-native"):
        return {"plain"}, None
    if variant == "weighted":
        return {"fallback"}, None
    return {"stable", "canary"}, "canary"


def nginx_config(prefix: Path, port: int) -> str:
    temp_paths = "\n".join(
        f"  {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
daemon off;
master_process on;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
{temp_paths}
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "ok"; }}
  }}
}}
"""


# wrk's summary as one JSON line; wrk's own text output rounds too much to compare variants.
WRK_REPORT_LUA = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%.0f,"p90_us":%.0f,' ..
    '"p99_us":%.0f,"mean_us":%.1f,"max_us":%.0f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


def parse_wrk_output(stdout: str) -> dict:
    """The JSON summary the report script printed, with req/s added."""
    for line in stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            summary = json.loads(line[len("BENCH_JSON ") :])
            if summary["duration_us"] <= 0:
                raise BenchError("wrk reported a zero duration")
            summary["rps"] = summary["requests"] * 1e6 / summary["duration_us"]
            return summary
    raise BenchError(f"wrk printed no BENCH_JSON line; its output was:\n{stdout}")
