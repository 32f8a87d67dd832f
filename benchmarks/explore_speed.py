"""How fast ``statesaga.testing.explore`` walks the example sagas' failure spaces.

Each round explores a saga at default settings (every single fault, every
single crash point, a duplicate start in each crash scenario) on a fresh
SQLite file, with fresh fake services whose effects and state it checks, and
times the whole call (opening the database included). The table gives, per
saga, the scenarios of its space and the time and scenarios per second of
the fastest, median and slowest round: this is a shared 2-core machine, so
rounds vary with what else runs.

How to run
----------
    python benchmarks/explore_speed.py
    python benchmarks/explore_speed.py --rounds 7 --sagas order
    python benchmarks/explore_speed.py --crashes 2 --sagas order
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from statesaga.examples.order import OrderRequest, OrderSaga
from statesaga.examples.services import FakeServices
from statesaga.examples.trip import TripRequest, TripSaga
from statesaga.testing import explore

SAGAS: dict[str, tuple[Any, Any]] = {
    "order": (OrderSaga, OrderRequest("c-1", 10.0)),
    "trip": (TripSaga, TripRequest("ann", "Porto", 2, 5_000.0)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sagas", nargs="+", default=list(SAGAS), choices=list(SAGAS))
    parser.add_argument("--crashes", type=int, default=1)
    parser.add_argument("--max-faults", type=int, default=1)
    args = parser.parse_args()

    print("| saga | scenarios | s (min / median / max) | scenarios/s (best / median) |")
    print("|---|---:|---|---|")
    for name in args.sagas:
        saga_type, request = SAGAS[name]
        seconds: list[float] = []
        count = 0
        for _ in range(args.rounds):
            services = FakeServices()
            with tempfile.TemporaryDirectory() as tmp:
                report = explore(
                    saga_type(services),
                    request,
                    url=f"sqlite:///{Path(tmp) / 'sagas.db'}",
                    effects=services.effect_counts,
                    state=services.snapshot,
                    crashes=args.crashes,
                    max_faults=args.max_faults,
                )
            assert report.ok, str(report.counterexample)
            seconds.append(report.seconds)
            count = report.scenarios
        best, median, worst = min(seconds), statistics.median(seconds), max(seconds)
        print(
            f"| {name} | {count} | {best:.2f} / {median:.2f} / {worst:.2f} "
            f"| {count / best:.0f} / {count / median:.0f} |"
        )


if __name__ == "__main__":
    main()
