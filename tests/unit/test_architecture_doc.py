"""docs/architecture.md follows one request through the code: every file its path names exists (renames keep the
doc true), and each is named once, the request's data going one way."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "src" / "qwen_triton"


def path_section() -> str:
    text = DOC.read_text()
    return text[text.index("## One streamed request"):text.index("## Threads and processes")]


def named_files(section: str) -> list[str]:
    return re.findall(r"`([\w/]+\.(?:py|pbtxt))`", section)


def resolve(name: str) -> Path:
    path = ROOT / name if name.startswith(("model_repository/", "benchmarks/", "client/")) else PACKAGE / name
    # config.pbtxt is filled from its committed template (build.fill_templates)
    return path.with_name(path.name + ".template") if path.name == "config.pbtxt" else path


def test_every_file_on_the_path_exists():
    names = named_files(path_section())
    assert len(names) > 20
    assert [n for n in names if not resolve(n).is_file()] == []


def test_each_file_is_named_once_on_the_path():
    names = named_files(path_section())
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_the_check_sees_a_repeated_or_missing_file():
    section = "`serving/outbox.py` then `serving/outbox.py`, and `serving/gone.py`"
    names = named_files(section)
    assert names.count("serving/outbox.py") == 2 and not resolve("serving/gone.py").is_file()
