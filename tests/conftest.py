"""Shared pytest configuration. Fixture modules of each area register themselves here."""

pytest_plugins: list[str] = [
    "tests.audio.pulse",
    "tests.lkserver.fixtures",
    "tests.speech_fixtures",
]
