#!/usr/bin/env python
"""Measure the concurrency models a service could use, side by side in one run (docs/decisions.md,
"Data plane: the concurrency model"): a bidirectional stream whose handler hands each message to a
worker thread (the edge server's batcher / onnxruntime) and streams the answer back, served by

  sync  grpc.server + thread pool, a reader thread per stream (what the services do: StreamPump)
  aio   grpc.aio.server, the worker reached with loop.run_in_executor

Each server runs in its own process; the client streams ``--messages`` messages of ``--bytes`` bytes
with ``--window`` in flight, then ``--latency`` messages one at a time. Reported per model and round:
messages/s, the server's CPU time per message (/proc/PID/stat) and the one-at-a-time round trip p50/p99.

    python scripts/bench_grpc_models.py [--messages 4000] [--bytes 2600] [--window 2] [--rounds 3]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc

METHOD = "/bench.Echo/Stream"
IDENT = (lambda b: b, lambda b: b)


def work(msg: bytes) -> bytes:
    return msg[:64]  # the answer: a small result, like a ResultBatch


def serve_sync(port_file: str) -> None:
    worker = futures.ThreadPoolExecutor(1)

    def stream(request_iterator, context):
        out: queue.Queue = queue.Queue()

        def read():
            for req in request_iterator:
                worker.submit(work, req).add_done_callback(lambda f: out.put(f.result()))
            out.put(None)

        threading.Thread(target=read, daemon=True).start()
        while True:
            item = out.get()
            if item is None:
                break
            yield item
        # drain what is still due (the reader ended after the last submit)
        worker.submit(lambda: None).result()
        while not out.empty():
            item = out.get()
            if item is not None:
                yield item

    server = grpc.server(futures.ThreadPoolExecutor(16))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "bench.Echo", {"Stream": grpc.stream_stream_rpc_method_handler(stream, *IDENT)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    open(port_file, "w").write(str(port))
    server.wait_for_termination()


def serve_aio(port_file: str) -> None:
    async def main():
        worker = futures.ThreadPoolExecutor(1)
        loop = asyncio.get_running_loop()

        async def stream(request_iterator, context):
            async for req in request_iterator:
                yield await loop.run_in_executor(worker, work, req)

        server = grpc.aio.server()
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "bench.Echo", {"Stream": grpc.stream_stream_rpc_method_handler(stream, *IDENT)})])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        open(port_file, "w").write(str(port))
        await server.wait_for_termination()

    asyncio.run(main())


def cpu_s(pid: int) -> float:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def client(port: int, messages: int, size: int, window: int, latency: int, pid: int) -> dict:
    payload = os.urandom(size)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        grpc.channel_ready_future(ch).result(timeout=20)
        call_fn = ch.stream_stream(METHOD, *IDENT)
        slots = threading.Semaphore(window)

        def gen(n):
            for _ in range(n):
                slots.acquire()
                yield payload

        list(call_fn(iter([payload] * 50)))  # warm-up
        c0, t0 = cpu_s(pid), time.perf_counter()
        got = 0
        for _ in call_fn(gen(messages)):
            got += 1
            slots.release()
        wall = time.perf_counter() - t0
        cpu = cpu_s(pid) - c0
        # one at a time
        rtts = []
        q: queue.Queue = queue.Queue()

        def gen1():
            for _ in range(latency):
                t = time.perf_counter()
                yield payload
                rtts.append(q.get() - t)

        for _ in call_fn(gen1()):
            q.put(time.perf_counter())
    rtts.sort()
    return {"messages_per_s": got / wall, "server_cpu_us_per_message": cpu / got * 1e6,
            "rtt_p50_ms": rtts[len(rtts) // 2] * 1e3, "rtt_p99_ms": rtts[int(len(rtts) * 0.99) - 1] * 1e3}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=4000)
    p.add_argument("--bytes", type=int, default=2600, help="message size (a FrameBatch of 16 is ~2.6 kB)")
    p.add_argument("--window", type=int, default=2, help="messages in flight")
    p.add_argument("--latency", type=int, default=500, help="one-at-a-time messages for the round trip")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--serve", choices=("sync", "aio"), help=argparse.SUPPRESS)
    p.add_argument("--port-file", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve:
        (serve_sync if a.serve == "sync" else serve_aio)(a.port_file)
        return
    rows: dict[str, list[dict]] = {"sync": [], "aio": []}
    for r in range(a.rounds):
        for model in rows:
            pf = f"/tmp/bench-grpc-{os.getpid()}-{model}.port"
            if os.path.exists(pf):
                os.remove(pf)
            proc = subprocess.Popen([sys.executable, __file__, "--serve", model, "--port-file", pf])
            try:
                for _ in range(200):
                    if os.path.exists(pf) and open(pf).read():
                        break
                    time.sleep(0.05)
                rows[model].append(client(int(open(pf).read()), a.messages, a.bytes, a.window, a.latency, proc.pid))
            finally:
                proc.kill()
                proc.wait()
    print(f"{a.messages} messages of {a.bytes} bytes, window {a.window}; {a.latency} one at a time; "
          f"median of {a.rounds} rounds (load average {os.getloadavg()[0]:.1f})\n")
    print("| model | messages/s | server CPU us/message | rtt p50 ms | rtt p99 ms |\n|---|---|---|---|---|")
    for model, res in rows.items():
        med = {k: statistics.median(x[k] for x in res) for k in res[0]}
        print(f"| {model} | {med['messages_per_s']:.0f} | {med['server_cpu_us_per_message']:.0f} | "
              f"{med['rtt_p50_ms']:.3f} | {med['rtt_p99_ms']:.3f} |")
    ratio = [s["messages_per_s"] / x["messages_per_s"] for s, x in zip(rows["sync"], rows["aio"])]
    print(f"\nsync / aio messages/s per round: {', '.join(f'{v:.2f}' for v in ratio)}")


if __name__ == "__main__":
    main()
