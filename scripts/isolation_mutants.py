"""Remove one access check at a time and run the access suites: each removal must make them fail.

Run from the repository root: `.venv/bin/python scripts/isolation_mutants.py`. Prints KILLED (a test
failed, as it must) or SURVIVED (no test noticed: a hole in the suites) for each check. The sources are
restored after each run.
"""

import pathlib
import subprocess

MUTANTS = [
    (
        "src/iotflow/auth/guards.py",
        "if device.user_id is None or device.user_id != principal.user_id:",
        "if False:",
    ),
    ("src/iotflow/auth/guards.py", "        if principal.device.id != device.id:\n", "        if False:\n"),
    ("src/iotflow/auth/guards.py", "        if not allow_device:\n", "        if False:\n"),
    (
        "src/iotflow/groups/service.py",
        "if not principal.is_admin and group.user_id != principal.user_id:",
        "if False:",
    ),
    (
        "src/iotflow/devices/endpoints.py",
        'filters: dict[str, Any] = {} if principal.is_admin else {"user_id": principal.user_id}',
        "filters: dict[str, Any] = {}",
    ),
    (
        "src/iotflow/devices/endpoints.py",
        'if not principal.is_admin and principal.user_id != user.id:\n        raise Forbidden("You may only list your own devices")',
        "pass",
    ),
    (
        "src/iotflow/telemetry/endpoints.py",
        '    if not allowed:\n        raise Forbidden("You may only read your own devices\' telemetry")',
        "    pass",
    ),
    (
        "src/iotflow/users/endpoints.py",
        'if not principal.is_admin and principal.user_id != user.id:\n        raise Forbidden("You may only see and change your own account")',
        "pass",
    ),
    ("src/iotflow/alerts/service.py", 'raise Forbidden("This alert rule belongs to someone else")', "pass"),
    ("src/iotflow/alerts/service.py", 'raise Forbidden("This alert is on a device you do not own")', "pass"),
]
tests = [
    "tests/api/test_isolation.py",
    "tests/api/test_users.py",
    "tests/api/test_groups.py",
    "tests/api/test_alerts.py",
    "tests/api/test_events.py",
]
for path, old, new in MUTANTS:
    p = pathlib.Path(path)
    src = p.read_text()
    if old not in src:
        print("NOT FOUND", path, old[:60])
        continue
    p.write_text(src.replace(old, new, 1))
    try:
        r = subprocess.run(
            [".venv/bin/pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
            capture_output=True,
            text=True,
            timeout=600,
        )
        last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-200:]
        print("KILLED " if r.returncode else "SURVIVED", path, old[:50].replace("\n", " "), "|", last)
    finally:
        p.write_text(src)
