#!/usr/bin/python3
"""The fleet test's client: new HTTP requests to VIP:PORT, one connection each,
at a fixed pace, until told to stop; one line per request.

    client.py VIP PORT OUT STOPFILE [--interval S] [--min N] [--max N] [--max-seconds S]

Runs in the client network namespace and talks only to the VIP given (an
address of the test's own namespaces). Bounded: it stops after --max
requests or --max-seconds whatever happens, and never before --min requests
unless the time bound hits. OUT gets "EPOCH_MS ok SERVER" or "EPOCH_MS fail
REASON" per request, then "# sent N failed M" when it ends.
"""
import argparse
import http.client
import os
import time


def one(vip, port, timeout):
    conn = http.client.HTTPConnection(vip, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace").strip()
        if resp.status != 200:
            return False, "status-%d" % resp.status
        return True, body.split()[0] if body else "empty"
    except Exception as e:  # every failure counts: refused, reset, timeout
        return False, type(e).__name__
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vip")
    ap.add_argument("port", type=int)
    ap.add_argument("out")
    ap.add_argument("stopfile")
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--min", type=int, default=1000)
    ap.add_argument("--max", type=int, default=30000)
    ap.add_argument("--max-seconds", type=float, default=600)
    a = ap.parse_args()
    t_end = time.monotonic() + a.max_seconds
    sent = failed = 0
    with open(a.out, "w", buffering=1) as out:
        nxt = time.monotonic()
        while sent < a.max and time.monotonic() < t_end:
            if sent >= a.min and os.path.exists(a.stopfile):
                break
            ok, what = one(a.vip, a.port, a.timeout)
            sent += 1
            failed += 0 if ok else 1
            out.write("%d %s %s\n" % (time.time() * 1000, "ok" if ok else "fail", what))
            nxt += a.interval
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                nxt = time.monotonic()
        out.write("# sent %d failed %d\n" % (sent, failed))


if __name__ == "__main__":
    main()
