"""edge-serve: a local web page and JSON API for bone age, and optionally a DICOM node answering with an SR.

Listens on 127.0.0.1 only unless --host says otherwise. On any other address anyone who can reach it could send
images: it then needs an access token (--token or $EDGE_SERVE_TOKEN; one is made up and printed when neither is
given). The DICOM node has its own address (--dicom-host, also 127.0.0.1 by default), so a modality can reach it
while the page stays on this computer. Research use only.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import secrets
import sys
from pathlib import Path

from edge.cli.common import add_model_args, run_cli

TOKEN_ENV = "EDGE_SERVE_TOKEN"
# The outbound queue of reports (edge.serve.outbox) outlives the process: a per-user state folder by default.
STATE = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
DEFAULT_QUEUE = STATE / "boneage-edge" / "dicom-outbox"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="edge-serve", description=__doc__.splitlines()[0])
    add_model_args(p)
    web = p.add_argument_group("web page and JSON API")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this computer only)")
    web.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    web.add_argument("--no-web", action="store_true", help="run the DICOM node only")
    web.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                     help=f"access token the API requires (Authorization: Bearer TOKEN); default ${TOKEN_ENV}")
    web.add_argument("--max-upload-mb", type=float, default=64, help="largest request body accepted (default 64)")
    web.add_argument("--no-access-log", action="store_true", help="no per-request log lines")
    dicom = p.add_argument_group("DICOM node")
    dicom.add_argument("--dicom-port", type=int, help="start the DICOM node on this port (e.g. 11112)")
    dicom.add_argument("--dicom-host", default="127.0.0.1",
                       help="address the DICOM node listens on (default: this computer only; 0.0.0.0: every network)")
    dicom.add_argument("--ae-title", default="BONEAGE", help="the node's AE title (default BONEAGE)")
    dicom.add_argument("--allow-ae", action="append", metavar="AE",
                       help="accept associations only from this calling AE title (repeat for several)")
    dicom.add_argument("--send-to", metavar="AE@HOST:PORT", help="send each Structured Report here by C-STORE")
    dicom.add_argument("--sr-dir", metavar="FOLDER", help="also write each Structured Report into this folder")
    dicom.add_argument("--queue-dir", metavar="FOLDER", default=str(DEFAULT_QUEUE),
                       help="reports waiting for --send-to to accept them, kept across restarts "
                            "(default %(default)s)")
    dicom.add_argument("--dicom-timeout", type=float, default=30, metavar="S",
                       help="give up a DICOM peer that sends or answers nothing for S seconds (default 30)")
    dicom.add_argument("--max-associations", type=int, default=32, metavar="N",
                       help="DICOM associations at once; more are refused (default 32)")
    return p.parse_args(argv)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _main(argv=None) -> int:
    args = parse_args(argv)
    if args.no_web and args.dicom_port is None:
        raise ValueError("--no-web needs --dicom-port: nothing to serve")
    if args.dicom_timeout <= 0 or args.max_associations < 1:
        raise ValueError("--dicom-timeout must be above 0 seconds and --max-associations at least 1")
    if args.dicom_port is not None and not (args.send_to or args.sr_dir):
        from edge.serve.dicom_node import NO_DESTINATION

        raise ValueError(NO_DESTINATION)  # said before the model loads, as a typo in --send-to is
    token = args.token
    if not is_loopback(args.host):
        print(f"edge-serve: WARNING: listening on {args.host}, not only this computer: anyone who can reach it "
              "can send images. Use it on a trusted network only.", file=sys.stderr)
        if not token and not args.no_web:
            token = secrets.token_urlsafe(24)
            print(f"edge-serve: no --token or ${TOKEN_ENV} given; this run's token: {token}", file=sys.stderr)
    if args.dicom_port is not None and not is_loopback(args.dicom_host):
        print(f"edge-serve: WARNING: the DICOM node listens on {args.dicom_host}: "
              + ("only the calling AE titles in --allow-ae may store" if args.allow_ae else
                 "any calling AE may store (give --allow-ae)"), file=sys.stderr)
    peer = _peer(args.send_to) if args.send_to else None  # a typo is reported before the model loads
    service = _load(args)
    node = _start_dicom(args, service, peer) if args.dicom_port is not None else None
    try:
        if args.no_web:
            print("edge-serve: DICOM node running; Ctrl-C stops it", file=sys.stderr)
            _wait_forever()
        else:
            _serve_web(args, service, token, node.outbox.status if node and node.outbox else None)
    finally:
        if node:
            node.stop()
    return 0


def _load(args):
    from edge.serve.service import Service

    return Service.load(args.bundle, backend=args.backend, precision=args.precision, threads=args.threads)


def _peer(text: str):
    from edge.serve.dicom_node import Peer

    return Peer.parse(text)


def _start_dicom(args, service, peer):
    from edge.serve.dicom_node import DicomNode

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # association chatter, not per-image detail
    node = DicomNode(service, args.ae_title, args.allow_ae, peer, args.sr_dir, args.queue_dir, args.dicom_timeout,
                     args.max_associations).start(args.dicom_host, args.dicom_port)
    print(f"edge-serve: DICOM node {args.ae_title} on {args.dicom_host}:{node.port}"
          + (f", reports to {peer.ae_title}@{peer.host}:{peer.port} through {args.queue_dir}" if peer else "")
          + (f", reports written to {args.sr_dir}" if args.sr_dir else "")
          + (f", callers allowed: {', '.join(args.allow_ae)}" if args.allow_ae else ", any calling AE accepted"),
          file=sys.stderr)
    return node


def _serve_web(args, service, token, outbox_status=None) -> None:
    import uvicorn

    from edge.serve.web import create_app

    app = create_app(service, token=token, max_upload_mb=args.max_upload_mb, outbox_status=outbox_status)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"edge-serve: open http://{shown}:{args.port}/" + (f"#token={token}" if token else ""), file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, access_log=not args.no_access_log, log_level="info")


def _wait_forever() -> None:
    import threading

    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
