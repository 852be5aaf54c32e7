#!/usr/bin/env python3
"""Example 3: a conditions administrator publishes a new campaign through a server.

What the script does, each step with the command an administrator would type:

1. creates an SQLite conditions database and two API tokens with
   ``conditionsdb token create``: one ``admin`` token (create campaigns, publish tags)
   and one upload-only token limited to the new campaign's tag (``iov:<tag>``);
2. starts ``conditionsdb serve`` on a free loopback port and waits until it answers;
3. through the server: ``pxdbg campaign create``, ``pxdbg checkpoint init`` (a DEMO
   checkpoint: UNTRAINED, narrow, not physics), ``pxdbg checkpoint upload`` with the
   upload token, shows that this token may not publish, ``pxdbg campaign publish``
   with the admin token, ``pxdbg campaign show``;
4. resolves the checkpoint for a run through the server, as a production job would
   (downloaded into a payload cache and hash-verified), generates a few events with it,
   and shows that a run outside the campaign's IoV is refused;
5. downloads the published tag as a basf2 snapshot, stops the server, and resolves again
   with the list "server, snapshot" and failover asked for (``PXDBG_FAILOVER=1`` in a
   job): the registry logs why the server was skipped and the snapshot answers. (Without
   failover, a server that is down stops the job.)

    python examples/03_admin_campaign_server.py                  # 2 events at the end
    python examples/03_admin_campaign_server.py --events 0 --workdir /tmp/admin-demo

Tokens are passed to commands in the ``CONDITIONSDB_TOKEN`` environment variable, never
on the command line (where ``ps`` would show them), and are not printed in full.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

# Run from a source checkout without installing: use the checkout's packages.
REPO = Path(__file__).resolve().parents[1]
if (REPO / "registry" / "resolve.py").is_file() and str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--events", type=int, default=2,
                        help="events to generate with the resolved checkpoint (default 2; 0 skips)")
    parser.add_argument("--campaign", default="demo-admin-2026",
                        help="name of the campaign to create (default demo-admin-2026)")
    parser.add_argument("--model", default="convnet", choices=["convnet", "resnet"],
                        help="generator model (default convnet)")
    parser.add_argument("--width", type=float, default=1 / 16,
                        help="channel width of the demo checkpoint (default 0.0625)")
    parser.add_argument("--exp", type=int, default=5, help="experiment the checkpoint is valid for (default 5)")
    parser.add_argument("--workdir", type=Path, default=Path("pxdbg_example_03"),
                        help="database, checkpoint, cache and logs go here (default ./pxdbg_example_03)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for the server to come up (default 60)")
    args = parser.parse_args(argv)
    if args.events < 0 or args.exp < 0 or not 0 < args.width <= 1:
        parser.error("--events and --exp must be >= 0, and 0 < --width <= 1")
    return args


class Shell:
    """Runs the ``pxdbg`` / ``conditionsdb`` commands as a user would, printing each one."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        # The user's own configuration must not leak into the demo (another database,
        # another token, another cache).
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("CONDITIONSDB_", "PXDBG_"))}
        self.env["CONDITIONS_CACHE_DIR"] = str(workdir / "cli-cache")
        if str(REPO) in sys.path:  # a source checkout: the commands need its packages too
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), self.env.get("PYTHONPATH")]))

    def run(self, program: str, *args: str, token: tuple[str, str] | None = None,
            expect_failure: bool = False) -> str:
        shown = " ".join(shlex.quote(a) for a in args)
        prefix = f"CONDITIONSDB_TOKEN=${token[0]} " if token else ""
        print(f"$ {prefix}{program} {shown}")
        env = dict(self.env)
        if token:
            env["CONDITIONSDB_TOKEN"] = token[1]
        module = {"pxdbg": "pxdbg", "conditionsdb": "conditions.cli"}[program]
        done = subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=self.workdir,
                              capture_output=True, text=True, timeout=300)
        output = (done.stdout + done.stderr).strip()
        if expect_failure:
            if done.returncode == 0:
                raise SystemExit(f"expected `{program} {shown}` to be refused, but it succeeded:\n{output}")
            for line in output.splitlines():
                print(f"  {line}")
            print("  (refused, as it should be)")
            return output
        if done.returncode != 0:
            raise SystemExit(f"`{program} {shown}` failed with status {done.returncode}:\n{output}")
        return output

    def show(self, program: str, *args: str, **kwargs) -> str:
        output = self.run(program, *args, **kwargs)
        for line in output.splitlines():
            print(f"  {line}")
        return output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``conditionsdb serve`` in a subprocess on a free loopback port."""

    def __init__(self, db: Path, log: Path, env: dict[str, str], timeout: float):
        import requests

        for attempt in range(3):  # the free port may be taken between choosing and binding
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            command = ["conditionsdb", "--db", str(db), "serve", "--host", "127.0.0.1",
                       "--port", str(self.port), "--log-level", "warning"]
            print(f"$ {' '.join(command)} &     (log: {log})")
            with open(log, "ab") as out:
                self.process = subprocess.Popen([sys.executable, "-m", "conditions.cli", *command[1:]],
                                                stdout=out, stderr=subprocess.STDOUT, env=env)
            t0 = time.monotonic()
            while time.monotonic() - t0 < timeout and self.process.poll() is None:
                try:
                    if requests.get(self.url + "/api/v1/health", timeout=1).status_code == 200:
                        print(f"  server ready at {self.url} after {time.monotonic() - t0:.1f} s "
                              f"(pid {self.process.pid})")
                        return
                except requests.RequestException:
                    time.sleep(0.2)
            self.stop()
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"the conditions server did not come up; its log ends with:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def create_token(shell: Shell, db: Path, name: str, scope: str) -> str:
    output = shell.run("conditionsdb", "--db", str(db), "--json", "token", "create", name, "--scope", scope)
    answer = json.loads(output)
    info = answer["token"]
    print(f"  token {info['token_id']} for {info['name']} with scope {', '.join(info['scopes'])}: "
          f"secret {answer['secret'][:8]}... (shown once; kept in memory here)")
    return answer["secret"]


def step(title: str) -> None:
    print()
    print(f"== {title}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "conditions.db"
    # Every run starts from an empty database (the payload caches are content-addressed and
    # verified on use, so they may stay).
    for old in (db, workdir / "server.log"):
        old.unlink(missing_ok=True)
    for old in (workdir / "conditions.db.payloads", workdir / "snapshot"):
        shutil.rmtree(old, ignore_errors=True)
    shell = Shell(workdir)

    from registry.campaigns import campaign_tag

    tag = campaign_tag(args.campaign)
    print(f"pxdbg example 3: publish campaign {args.campaign} (global tag {tag}) through a conditions server")
    print(f"working directory: {workdir}")

    step("1. tokens: an admin, and an uploader limited to the new campaign's tag")
    admin = ("ADMIN_TOKEN", create_token(shell, db, "campaign-admin", "admin"))
    uploader = ("UPLOAD_TOKEN", create_token(shell, db, "checkpoint-uploader", f"iov:{tag}"))

    step("2. start the conditions server")
    server = Server(db, workdir / "server.log", shell.env, args.timeout)
    try:
        run_admin_steps(args, shell, server.url, tag, admin, uploader)
        snapshot = resolve_and_generate(args, shell, server.url, tag, workdir)
    finally:
        server.stop()
    print(f"  server (pid {server.process.pid}) stopped")
    resolve_with_server_down(args, server.url, snapshot, workdir)
    return 0


def run_admin_steps(args, shell: Shell, url: str, tag: str, admin, uploader) -> None:
    step("3. create the campaign, upload a checkpoint, publish the tag")
    shell.show("pxdbg", "campaign", "create", args.campaign, "--db", url,
               "--description", "DEMO campaign made by examples/03 (invented conditions)",
               "--condition", "her_current_mA=1040", "--condition", "ler_current_mA=1300",
               "--condition", "injection=continuous", "--luminosity", "3.2e34",
               "--simulation-release", "release-08-00-00",
               "--training-dataset", "/belle/MC/demo/pxd_background_training.h5", token=admin)
    checkpoint = "demo_checkpoint.safetensors"
    shell.show("pxdbg", "checkpoint", "init", "--model", args.model, "--config", f"width={args.width}",
               "--campaign", args.campaign, "--seed", "0", "-o", checkpoint)
    print("  (a DEMO checkpoint: untrained weights at reduced width; it says so in its manifest)")
    iov = f"{args.exp},0,{args.exp},-1"
    shell.show("pxdbg", "checkpoint", "upload", checkpoint, "--model", args.model, "--campaign", args.campaign,
               "--iov", iov, "--db", url, token=uploader)
    print("The upload token may change IoVs in this one tag, but not change tag states:")
    shell.run("pxdbg", "campaign", "publish", args.campaign, "--db", url, token=uploader, expect_failure=True)
    shell.show("pxdbg", "campaign", "publish", args.campaign, "--db", url, token=admin)
    shell.show("pxdbg", "campaign", "show", args.campaign, "--db", url)
    shell.show("pxdbg", "campaign", "list", "--db", url)


def resolve_and_generate(args, shell: Shell, url: str, tag: str, workdir: Path) -> Path:
    step("4. resolve the checkpoint for a run through the server, as a production job does")
    run = 42
    shell.show("pxdbg", "checkpoint", "resolve", "--model", args.model, "--campaign", args.campaign,
               "--exp", str(args.exp), "--run", str(run), "--source", url, "--no-embedded")

    import torch

    torch.set_num_threads(1)
    from conditions.cache import PayloadCache
    from conditions.exceptions import NoPayloadFoundError
    from pxdbg.module import PXDBackgroundGenerator
    from registry.resolve import CheckpointRegistry

    print("In Python (what the generator module does at each begin_run):")
    cache = PayloadCache(workdir / "payload-cache")
    with CheckpointRegistry([url], use_embedded=False, cache=cache) as registry:
        t0 = time.perf_counter()
        found = registry.resolve(args.model, args.exp, run, campaign=args.campaign)
        first_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        registry.resolve(args.model, args.exp, run + 1, campaign=args.campaign)
        next_us = (time.perf_counter() - t0) * 1e6
        print(f"  exp {args.exp} run {run}: {found.describe()}")
        print(f"  verified local copy: {found.path}")
        print(f"  manifest: model {found.manifest.model} v{found.manifest.architecture_version}, "
              f"campaign {found.manifest.campaign}, training steps {found.manifest.training_steps}")
        print(f"  lookup: {first_ms:.0f} ms the first time (server + download), {next_us:.0f} us for the "
              f"next run in the same IoV (in-process cache)")
        try:
            registry.resolve(args.model, args.exp + 1, 1, campaign=args.campaign)
        except NoPayloadFoundError as error:
            print(f"  exp {args.exp + 1} run 1 is outside the campaign's IoVs and is refused:\n    {error}")
        else:
            raise SystemExit("a run outside the campaign's IoVs was not refused")

        if args.events:
            generator = PXDBackgroundGenerator(args.model, seed=1, resolver=registry.as_resolver(campaign=args.campaign))
            generator.initialize()
            generator.begin_run(args.exp, run)
            events = generator.events(args.events)
            generator.terminate()
            digits = sum(len(d) for d in events) / len(events)
            print(f"  generated {len(events)} event(s) with it: {digits:.0f} digits per event "
                  f"({digits / 7.68e6:.2%} of the 7.68 million PXD pixels), "
                  f"{generator.stats.generate_seconds / len(events):.2f} s per event")

    step("5. keep a basf2 snapshot of the published tag for sites without the server")
    snapshot = workdir / "snapshot"
    shell.show("conditionsdb", "--db", url, "download", tag, "-o", str(snapshot))
    return snapshot


def resolve_with_server_down(args, url: str, snapshot: Path, workdir: Path) -> None:
    step("6. the server is down: with failover, the registry goes on to the next source and says why")
    from conditions.cache import PayloadCache
    from registry.resolve import CheckpointRegistry

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  [%(name)s] %(levelname)s %(message)s"))
    log = logging.getLogger("registry.resolve")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        cache = PayloadCache(workdir / "payload-cache-2")
        fast = {"retries": 0, "timeout": 2.0, "total_timeout": 5.0}
        with CheckpointRegistry([url, snapshot], cache=cache, client_options=fast, failover=True) as registry:
            print(f"  sources in order: {' -> '.join(registry.source_descriptions)}")
            found = registry.resolve(args.model, args.exp, 42, campaign=args.campaign)
    finally:
        log.removeHandler(handler)
    print(f"  answered by: {found.source}")
    print("Done.")


if __name__ == "__main__":
    sys.exit(main())
