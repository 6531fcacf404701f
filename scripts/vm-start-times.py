#!/usr/bin/env python3
"""Envoy start-to-ready time with each guard filter alone (one worker, median of 5).

Run from the repository root after `make wasm`: `.venv/bin/python scripts/vm-start-times.py`
(PyYAML comes with `make setup`). It starts the pinned Envoy with envoy/envoy.yaml reduced to one
filter, on loopback ports 19500+, and prints the median time until the admin /ready answers.
"""
import copy
import subprocess
import time
import urllib.request

import yaml
base = yaml.safe_load(open('envoy/envoy.yaml'))
hcm = base['static_resources']['listeners'][0]['filter_chains'][0]['filters'][0]['typed_config']
filters = hcm['http_filters']
router = filters[-1]
def run(keep, port):
    cfg = copy.deepcopy(base)
    h = cfg['static_resources']['listeners'][0]['filter_chains'][0]['filters'][0]['typed_config']
    h['http_filters'] = [f for f in filters if f['name'] in keep] + [router]
    cfg['admin']['address']['socket_address']['port_value'] = port
    cfg['static_resources']['listeners'][0]['address']['socket_address']['port_value'] = port + 1
    path = f'/tmp/vm_{port}.yaml'
    yaml.safe_dump(cfg, open(path, 'w'))
    t0 = time.time()
    p = subprocess.Popen(['.venv/bin/envoy', '-c', path, '--concurrency', '1', '--use-dynamic-base-id', '-l', 'error'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ready = None
    for _ in range(600):
        try:
            if urllib.request.urlopen(f'http://127.0.0.1:{port}/ready', timeout=0.2).status == 200:
                ready = time.time() - t0; break
        except Exception:
            time.sleep(0.01)
    p.terminate(); p.wait()
    return ready
res = {}
for name, keep in [('none', []), ('llm-telemetry', ['llm-telemetry']), ('pii-redact', ['pii-redact']), ('prompt-guard', ['prompt-guard']), ('schema-guard', ['schema-guard'])]:
    times = sorted(run(keep, 19500 + 10*i) for i in range(5))
    res[name] = times[2]
    print(f"{name:14} median ready {times[2]*1000:.0f} ms  (min {times[0]*1000:.0f})")
