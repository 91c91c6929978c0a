"""`manage.py generate_traffic --base-url URL`: exercise every metric family over real HTTP."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from dashboards.traffic import TrafficError, TrafficRun, setup_fixtures


class Command(BaseCommand):
    help = (
        "Send real traffic to a running Traversion (web, worker and beat) so that every "
        "metric family has samples: logins good and bad, API keys, a cross-tenant attempt, "
        "a permission denial, events with a scripted incident, root-cause walks, a SQL rule "
        "evaluated every second notifying local receivers, a silence, a test firing, a "
        "WebSocket. Tenants traffic-a and traffic-b, their users and keys are created (or "
        "refreshed) in this database first. Ends on its own within the time budget."
    )

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument(
            "--budget",
            type=float,
            default=150.0,
            help="Seconds the run may take at most (default 150; it stops short of it).",
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="Fail when an endpoint is missing (404) or a call gets an unexpected status.",
        )

    def handle(self, base_url: str, budget: float, strict: bool, **options):
        if not 10 <= budget <= 175:
            raise CommandError("--budget must be between 10 and 175 seconds")
        fixtures = setup_fixtures()
        run = TrafficRun(base_url, budget_seconds=budget, strict=strict, log=self.stdout.write)
        try:
            report = run.run(fixtures)
        except TrafficError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write("")
        self.stdout.write(f"{'call':<36} responses")
        for label, by_status in report.calls.items():
            statuses = ", ".join(f"{status}x{count}" for status, count in sorted(by_status.items()))
            self.stdout.write(f"{label:<36} {statuses}")
        for problem in report.problems:
            self.stderr.write(f"problem: {problem}")
        total = sum(sum(v.values()) for v in report.calls.values())
        self.stdout.write(
            f"{total} requests, {len(report.missing)} missing endpoints, "
            f"{len(report.problems)} problems"
        )
        if strict and report.problems:
            raise CommandError(f"{len(report.problems)} problems (see above)")
