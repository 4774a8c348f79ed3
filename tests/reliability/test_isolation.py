"""A poison request fails alone, with an error naming its field; the heaviest word list an engine accepts
barely slows the request beside it, and a heavier one is refused by name."""
import json
import urllib.error
import urllib.request

import pytest

from client.reliability import beside_heavy_request, poison_round
from qwen_triton.client import QwenClient

pytestmark = pytest.mark.e2e
FAR = 10**9

POISONS = {
    "end_id": dict(end_id=FAR, min_tokens=4),
    "pad_id": dict(pad_id=FAR),
    "bad_words": dict(bad_words=["x"] * 1000),
    "stop_words": dict(stop_words=["lorem " * 40]),
    "top_p": dict(top_p=1.5),
    "history": dict(history="[" * 100_000 + "]" * 100_000),
}


@pytest.mark.parametrize("field", POISONS)
def test_a_poison_request_among_innocents_fails_alone_and_names_its_field(probe, field):
    result = poison_round(probe, POISONS[field], innocents=7)
    assert result["innocents_failed"] == 0, result
    assert result["poison"].startswith("error:") and field in result["poison"], result


@pytest.mark.parametrize("body, named", [
    # NVIDIA's documented generate body without text_input: preprocessing refuses it by name.
    ({"max_tokens": 4, "bad_words": "", "stop_words": ""}, True),
    # Nothing for preprocessing at all (every input goes straight to tensorrt_llm): Triton refuses the step.
    ({"max_tokens": 4, "temperature": 0.0}, False),
])
def test_a_request_without_text_input_is_refused(triton, body, named):
    # Triton's ensemble answers a request missing a required input with the final flag alone (an empty
    # success; the generate endpoint then complains that no response came): text_input is optional in the
    # config, and its absence is an error, never an empty answer.
    url = f"http://127.0.0.1:{triton.ports.http}/v2/models/ensemble/generate"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    message = refused.value.read().decode()
    assert refused.value.code == 400
    assert ("text_input: is required" in message) if named else ("request has 0 inputs" in message)


def test_the_heaviest_accepted_word_list_does_not_hold_the_request_beside_it(probe, long_engine):
    from qwen_triton.config import load_engine_folder

    limits = load_engine_folder(long_engine).config.limits
    # As many words as accepted, each near the longest accepted, all sharing prefixes a naive check would walk.
    words = [f"w{i} " + "lorem ipsum dolor sit amet " * 4 for i in range(limits.max_words_per_list)]
    heavy = dict(bad_words=words, stop_words=words[:limits.max_words_per_list], max_tokens=96, min_tokens=96,
                 temperature=0.0)
    with QwenClient(probe.grpc) as client:
        assert client.generate("Hello", **heavy).num_output_tokens == 96  # accepted
    result = beside_heavy_request(probe, heavy)
    # On two cores any neighbour slows a request; what the word lists add is measured against a plain one.
    # (The bound, 2x the time alone, is measured by client.reliability_report.)
    assert result["ratio_to_plain_neighbour"] <= 1.5, result
