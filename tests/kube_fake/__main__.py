"""`python -m tests.kube_fake --port N --kubeconfig PATH [--tls DIR [--client-certs]]`: serve a
fake cluster (three CPU nodes, one GPU node) until SIGTERM or SIGINT, then kill every pod's
processes and exit."""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from tests.kube_fake.server import CONTEXT, serve, write_kubeconfig
from tests.kube_fake.tls import make_pki

CONTEXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,252}")


async def _main(args: argparse.Namespace) -> None:
    root = Path(args.state_dir or tempfile.mkdtemp(prefix="kube-fake-"))
    root.mkdir(parents=True, exist_ok=True)
    pki = make_pki(Path(args.tls)) if args.tls else None
    served = await serve(
        root,
        args.port,
        load_balancer=not args.no_load_balancer,
        pod_networks=args.pod_network == "namespace",
        load_balancer_delay=args.load_balancer_delay,
        pki=pki,
        client_certs=args.client_certs,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        write_kubeconfig(Path(args.kubeconfig), served.url, args.context, pki, args.client_certs)
        print(f"kube-fake serving {served.url} (kubeconfig {args.kubeconfig})", flush=True)
        await stop.wait()
    finally:
        await served.close()
        if not args.state_dir:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.kube_fake", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 (the default) picks a free port")
    parser.add_argument("--kubeconfig", required=True, help="where to write its kubeconfig")
    parser.add_argument("--context", default=CONTEXT, help="its context's (and cluster's) name")
    parser.add_argument("--state-dir", help="where pod sandboxes live (default: a temp dir)")
    parser.add_argument(
        "--pod-network",
        choices=("host", "namespace"),
        default="host",
        help="host: every pod at 127.0.0.1; namespace (root): each pod its own address",
    )
    parser.add_argument(
        "--no-load-balancer", action="store_true", help="LoadBalancer services never get an address"
    )
    parser.add_argument(
        "--load-balancer-delay",
        type=float,
        default=0.0,
        help="seconds before a LoadBalancer service gets its address (a slow cloud's)",
    )
    parser.add_argument(
        "--tls",
        metavar="DIR",
        help="serve HTTPS with a CA and certificates made in DIR (ca.crt, client.crt...)",
    )
    parser.add_argument(
        "--client-certs",
        action="store_true",
        help="with --tls: the kubeconfig's user is a client certificate, and an API request "
        "with neither a certificate nor a token is refused 401",
    )
    args = parser.parse_args(argv)
    if args.client_certs and not args.tls:
        sys.exit("--client-certs needs --tls")
    if not CONTEXT_NAME.fullmatch(args.context):  # a kubeconfig's names are free: an EKS ARN
        sys.exit("--context must be letters, digits and . _ - : / @ (an EKS ARN is one)")
    if not 0 <= args.load_balancer_delay <= 3600:
        sys.exit("--load-balancer-delay must be between 0 and 3600")
    if not 0 <= args.port < 65536:
        sys.exit("--port must be between 0 and 65535")
    asyncio.run(_main(args))


main()
