"""A consumer in another language, with Python's standard library only.

It finds the providers of a service through etcd's own HTTP/JSON gateway (`/v3/kv/range` over
the service's directory), reads each instance's JSON for its HTTP endpoint, calls the method over
HTTP/JSON round robin, and prints a summary. Exit status 1 when a call failed or no provider
serves HTTP.

    python3 scripts/polyglot.py ETCD_HOST:PORT [--root /rpc] [--service UserService:1.0]
                                [--method get_user] [--args '[1]'] [--calls 20]
"""
import argparse
import base64
import collections
import json
import sys
import urllib.error
import urllib.request


def b64(text):
    return base64.b64encode(text.encode()).decode()


def prefix_end(prefix):
    """The first key after every key that starts with `prefix` (etcd's range_end for a prefix)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


def post_json(url, body, timeout=5):
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def providers(etcd, root, service):
    """The HTTP base URL of every instance of `service` that serves HTTP/JSON."""
    prefix = f"{root.rstrip('/')}/{service}/"
    found = post_json(f"http://{etcd}/v3/kv/range", {"key": b64(prefix), "range_end": prefix_end(prefix)})
    urls = []
    for kv in found.get("kvs", []):
        try:
            instance = json.loads(base64.b64decode(kv["value"]))
        except (ValueError, KeyError) as e:
            print(f"skipping a value that is not an instance: {e}", file=sys.stderr)
            continue
        http = instance.get("http")
        if http:
            scheme = "https" if http.get("tls") else "http"
            urls.append(f"{scheme}://{instance['host']}:{http['port']}")
    return sorted(urls)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("etcd")
    parser.add_argument("--root", default="/rpc")
    parser.add_argument("--service", default="UserService:1.0")
    parser.add_argument("--method", default="get_user")
    parser.add_argument("--args", default="[1]")
    parser.add_argument("--calls", type=int, default=20)
    options = parser.parse_args()

    urls = providers(options.etcd, options.root, options.service)
    print(f"found {len(urls)} provider(s) of {options.service} through etcd: {', '.join(urls)}")
    if not urls:
        return 1
    args = json.loads(options.args)
    by_instance = collections.Counter()
    failed = 0
    for call in range(options.calls):
        url = urls[call % len(urls)]
        try:
            result = post_json(f"{url}/{options.service}/{options.method}", args)
            by_instance[url] += 1
            if call < 3:
                print(f"call {call + 1}: {json.dumps(result)}")
        except (urllib.error.URLError, OSError) as e:
            failed += 1
            print(f"call {call + 1} to {url} failed: {e}", file=sys.stderr)
    summary = {"calls": options.calls, "failed": failed, "by_instance": dict(sorted(by_instance.items()))}
    print(json.dumps(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
