"""Dockerfile.triton and the README's TensorRT-LLM steps agree with each other, with the pinned release and
with the real command-line parsers (a renamed flag fails here, not in a user's container)."""
import re
import shlex
from pathlib import Path

import pytest

import build.fill_templates
import build.trtllm_engine
from qwen_triton.trtllm import NGC_IMAGE, TENSORRT_LLM_VERSION

ROOT = Path(__file__).resolve().parents[2]
PARSERS = {"build.trtllm_engine": build.trtllm_engine.parser, "build.fill_templates": build.fill_templates.parser}


def shell_lines(text: str) -> list[str]:
    """Command lines of a block, comment markers dropped and backslash continuations joined."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip().lstrip("#").strip()
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [line for line in lines if line]


def steps(text: str) -> list[list[str]]:
    found = []
    for line in shell_lines(text):
        if not line.startswith(("python -m build.", "tritonserver ")):
            continue  # prose
        words = shlex.split(line)
        if words[:2] == ["python", "-m"] and words[2] in PARSERS:
            found.append(words[2:])
        elif words and words[0] == "tritonserver":
            found.append(words)
    return found


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## TensorRT-LLM"):text.index("## The ensemble contract")]


DOCKERFILE = (ROOT / "Dockerfile.triton").read_text()


@pytest.mark.parametrize("source", ["Dockerfile.triton", "README.md"])
def test_three_steps_parse_with_the_real_parsers(source):
    text = DOCKERFILE if source == "Dockerfile.triton" else readme_section()
    found = steps(text)
    assert [s[0] for s in found] == ["build.trtllm_engine", "build.fill_templates", "tritonserver"]
    for module, *args in found[:2]:
        PARSERS[module]().parse_args(args)  # SystemExit on an unknown or missing flag
    assert "--runtime" in found[1] and found[1][found[1].index("--runtime") + 1] == "tensorrt_llm"
    assert found[2][1] == "--model-repository"


def test_dockerfile_and_readme_give_the_same_build_command():
    docker_build = steps(DOCKERFILE)[0]
    readme_build = steps(readme_section())[0]
    assert docker_build == readme_build


def test_everything_names_the_pinned_release(trtllm):
    assert re.search(r"^FROM (\S+)$", DOCKERFILE, re.M).group(1) == NGC_IMAGE
    assert f"ARG TRTLLM_TAG=v{TENSORRT_LLM_VERSION}" in DOCKERFILE
    assert f"TensorRT-LLM {TENSORRT_LLM_VERSION}" in readme_section() and NGC_IMAGE.split("/")[-1] in readme_section()
    import tensorrt_llm

    assert tensorrt_llm.__version__ == TENSORRT_LLM_VERSION  # the fake mirrors the pinned release
