"""Window accounting of the load generator (pure; the e2e tier drives it against the server)."""
from qwen_triton.loadtest import _Sample


def test_tokens_by_counts_the_chunks_arrived_by_then():
    sample = _Sample(start_s=10.0, ttft_s=0.5, latency_s=3.0, output_tokens=9,
                     arrival_s=[10.5, 11.0, 12.0, 13.0], tokens_at=[1, 4, 6, 9])
    assert sample.tokens_by(10.4) == 0
    assert sample.tokens_by(10.5) == 1
    assert sample.tokens_by(11.9) == 4
    assert sample.tokens_by(12.5) - sample.tokens_by(10.7) == 5  # window (10.7, 12.5]: chunks at 11.0 and 12.0
    assert sample.tokens_by(99.0) == 9
