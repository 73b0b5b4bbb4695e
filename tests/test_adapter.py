"""qwen2_5_omni_safe in process: request kinds, generation kwargs, prefetch, the memory check, device maps, the 3B."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lmms_eval.api.instance import GenerationResult, Instance
from PIL import Image

from omni_lmms_plugin import synthetic_media as sm
from omni_lmms_plugin.errors import ConfigError
from omni_lmms_plugin.provenance import FAILURE_PREFIX


def make_model(checkpoint, tmp_path, **args):
    from omni_lmms_plugin.adapter import Qwen25OmniSafe

    return Qwen25OmniSafe(
        pretrained=str(checkpoint), device="cpu", provenance_dir=str(tmp_path / "prov"), resume=False, **args
    )


def requests(model, docs: list[dict], gen_kwargs: dict | None = None, task: str = "t") -> list[Instance]:
    """lmms-eval requests for ``docs``; each doc carries its question and its visuals."""
    model.task_dict = {task: {"test": docs}}
    out = []
    for doc_id, doc in enumerate(docs):
        arguments = (
            doc["question"],
            dict(gen_kwargs or {"max_new_tokens": 5}),
            lambda d: d["visuals"],
            doc_id,
            task,
            "test",
        )
        out.append(Instance("generate_until", arguments, 0, {"task": task, "doc_id": doc_id, "repeats": 1}))
    return out


def records(tmp_path) -> list[dict]:
    lines = (tmp_path / "prov" / "samples_rank0.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    return {
        "video": str(sm.write_video(folder / "v.mp4", width=320, height=240, duration=3.0)),
        "silent": str(sm.write_video(folder / "s.mkv", width=160, height=120, duration=2.0, audio=False)),
        "audio": str(sm.write_audio(folder / "a.wav", duration=2.5)),
        "long": str(sm.write_video(folder / "long.mp4", width=640, height=360, fps=10.0, duration=40.0)),
    }


@pytest.fixture(scope="module")
def model(tiny_7b, tmp_path_factory):
    return make_model(tiny_7b, tmp_path_factory.mktemp("model"))


def test_unknown_model_args_name_the_valid_keys(tiny_7b, tmp_path):
    with pytest.raises(
        ConfigError, match=r"unknown model_args for qwen2_5_omni_safe: frames_per_second\. Valid keys: .*fps"
    ):
        make_model(tiny_7b, tmp_path, frames_per_second=2)


def test_every_request_kind_is_answered_with_one_conversation_each(model, media):
    docs = [
        {"question": "What is in the video?", "visuals": [media["video"]]},
        {
            "question": "Two images?",
            "visuals": [Image.new("RGB", (120, 90), "red"), Image.new("RGB", (64, 64), "blue")],
        },
        {"question": "What do you hear?", "visuals": [media["audio"]]},
        {"question": "Raw audio?", "visuals": [{"array": np.zeros(24_000, dtype=np.float32), "sampling_rate": 48_000}]},
        {"question": "Only text?", "visuals": []},
        {"question": "A silent video", "visuals": [media["silent"]]},
    ]
    answers = model.generate_until(requests(model, docs))
    assert len(answers) == len(docs)
    for answer in answers:
        assert isinstance(answer, GenerationResult)
        assert not answer.text.startswith(FAILURE_PREFIX), answer.text
        assert answer.token_counts.input_tokens > 0 and 0 < answer.token_counts.output_tokens <= 5


def test_generation_kwargs_are_honoured(model, media, tmp_path):
    docs = [{"question": "Describe.", "visuals": [media["video"]]}]
    long = model.generate_until(requests(model, docs, {"max_new_tokens": 12}))[0]
    short = model.generate_until(requests(model, docs, {"max_new_tokens": 3}))[0]
    assert short.token_counts.output_tokens <= 3 < long.token_counts.output_tokens
    stop = long.text[2:4]
    cut = model.generate_until(requests(model, docs, {"max_new_tokens": 12, "until": [stop]}))[0]
    assert cut.text == long.text[: long.text.find(stop)]
    empty = model.generate_until(requests(model, docs, {"max_new_tokens": 12, "until": [long.text[:1]]}))[0]
    assert empty.text.startswith(FAILURE_PREFIX) and "no text" in empty.text, (
        "an empty answer must be a recorded failure"
    )
    beams = model.generate_until(requests(model, docs, {"max_new_tokens": 4, "num_beams": 2}))[0]
    sampled = model.generate_until(requests(model, docs, {"max_new_tokens": 4, "temperature": 0.8, "do_sample": True}))[
        0
    ]
    assert beams.text and sampled.text
    hf_keys = {"max_new_tokens": 4, "top_k": 5, "repetition_penalty": 1.2, "min_new_tokens": 2, "use_cache": "true",
               "length_penalty": 1.0, "no_repeat_ngram_size": 3, "early_stopping": False, "top_p": None}  # fmt: skip
    extra = model.generate_until(requests(model, docs, hf_keys))[0]
    assert not extra.text.startswith(FAILURE_PREFIX), extra.text


def test_an_unknown_generation_key_is_one_error_before_the_first_sample(model, media):
    """Every request's settings are parsed before the first sample, and a bad key is one error naming the task.
    Breaking check (by hand): settings parsed on first use instead (a lazy mapping in ``generate_until``): the error
    came from deep in the run without the task's name, failed."""
    docs = [{"question": "Describe.", "visuals": [media["video"]]}] * 2
    journal = model.provenance.samples_path
    before = journal.read_text()
    with pytest.raises(ConfigError, match=r"task t: unsupported generation_kwargs: frobnicate; supported: .*top_k"):
        model.generate_until(requests(model, docs, {"max_new_tokens": 4, "frobnicate": 1}))
    assert journal.read_text() == before, "a sample was run before the error"


def test_data_parallel_padding_is_not_computed_or_recorded(model, media):
    """lmms-eval 0.7.3 marks rank padding with ``metadata["__padding_only__"]``. Catches padding being generated
    and journalled (the check at the top of ``generate_until`` removed): then the journal gains two records."""
    docs = [{"question": "Describe.", "visuals": [media["video"]]}]
    real, padding = requests(model, docs) * 2
    padding = Instance("generate_until", padding.arguments, 1, {**padding.metadata, "__padding_only__": True})
    journal = model.provenance.samples_path
    before = len(journal.read_text().splitlines())
    answers = model.generate_until([real, padding])
    assert not answers[0].text.startswith(FAILURE_PREFIX) and answers[0].token_counts.input_tokens > 0
    assert answers[1].text == "" and answers[1].token_counts.input_tokens == 0
    assert len(journal.read_text().splitlines()) == before + 1


def test_task_video_policy_reaches_the_plan_and_not_generate(model, media):
    docs = [{"question": "Q", "visuals": [media["long"]]}]
    gen_kwargs = {"max_new_tokens": 4, "omni_fps": 0.5, "omni_max_frames": 8, "omni_use_audio_in_video": False}
    answer = model.generate_until(requests(model, docs, gen_kwargs))[0]
    assert not answer.text.startswith(FAILURE_PREFIX)
    record = records(model.provenance.folder.parent)[-1]
    assert record["media"][0]["frames"] == 8 and record["tokens"]["audio_in_video"] == 0
    assert record["video_policy"]["fps"] == 0.5 and record["video_policy"]["use_audio_in_video"] == "false"


def test_prefetch_gives_the_same_inputs_and_answers_as_the_sequential_path(tiny_7b, media, tmp_path):
    docs = [
        {"question": f"Q{i}", "visuals": [media[name]]} for i, name in enumerate(["video", "long", "silent", "video"])
    ]
    results = {}
    for depth in (0, 2):
        folder = tmp_path / f"depth{depth}"
        model = make_model(tiny_7b, folder, prefetch=depth)
        answers = [a.text for a in model.generate_until(requests(model, docs))]
        hashes = [r["input_hash"] for r in records(folder)]
        results[depth] = (answers, hashes)
        assert all("media_wait_seconds" in r for r in records(folder))
    assert results[0] == results[2]


def test_the_resize_model_arg_reaches_the_pixels_and_the_resume_key(tiny_7b, media, tmp_path):
    """``resize=fast`` feeds the model other pixels than the default (``reference``, fetch_video's pixels: see
    ``test_reference_parity.py``), and a run with it is not resumed from a default run. Catches, each checked by hand:
    the arg not passed on to ``load_video`` in ``inputs.py`` (the input hashes were equal) and ``resize`` listed among
    the args left out of the resume key (the config keys were equal)."""
    docs = [{"question": "Q", "visuals": [media["video"]]}]
    logged = {}
    for resize in ("reference", "fast"):
        model = make_model(tiny_7b, tmp_path / resize, resize=resize)
        model.generate_until(requests(model, docs))
        logged[resize] = records(tmp_path / resize)[-1]
    assert logged["reference"]["media"][0]["frames"] == logged["fast"]["media"][0]["frames"]
    assert logged["reference"]["input_hash"] != logged["fast"]["input_hash"]
    assert logged["reference"]["config_key"] != logged["fast"]["config_key"]


def test_a_memory_cap_shrinks_the_plan_before_generating(tiny_7b, media, tmp_path):
    uncapped = make_model(tiny_7b, tmp_path / "free")
    uncapped.generate_until(requests(uncapped, [{"question": "Q", "visuals": [media["long"]]}]))
    free = records(tmp_path / "free")[-1]
    # Room for the weights, the fixed 1 GiB allowance and half of what this request's activations need.
    activations = free["estimated_peak_bytes"] - uncapped.weight_bytes - 2**30
    cap_gib = (uncapped.weight_bytes + 2**30 + 0.5 * activations) / 2**30
    capped = make_model(tiny_7b, tmp_path / "capped", max_memory_gib=cap_gib)
    answer = capped.generate_until(requests(capped, [{"question": "Q", "visuals": [media["long"]]}]))[0]
    record = records(tmp_path / "capped")[-1]
    assert not answer.text.startswith(FAILURE_PREFIX)
    assert record["estimated_peak_bytes"] < free["estimated_peak_bytes"]
    assert record["tokens"]["input"] < free["tokens"]["input"]
    assert any("before generating" in note for note in record["attempts"][0]["notes"])


def test_a_request_runs_through_a_model_split_by_a_device_map(tiny_7b, media, tmp_path):
    # Two "devices" a CPU machine has: the second decoder layer, the final norm and the head are offloaded to disk,
    # so accelerate dispatches the model with hooks that move tensors between them, as between GPUs.
    device_map = {"model.visual": "cpu", "model.audio_tower": "cpu", "model.language_model.embed_tokens": "cpu",
                  "model.language_model.layers.0": "cpu", "model.language_model.layers.1": "disk",
                  "model.language_model.norm": "disk", "model.language_model.rotary_emb": "cpu", "lm_head": "disk"}  # fmt: skip
    path = tmp_path / "map.json"
    path.write_text(json.dumps(device_map))
    model = make_model(tiny_7b, tmp_path, device_map=str(path))
    assert set(model.model.hf_device_map.values()) == {"cpu", "disk"}
    answer = model.generate_until(requests(model, [{"question": "Q", "visuals": [media["video"]]}]))[0]
    assert not answer.text.startswith(FAILURE_PREFIX)


def test_the_3b_variant_loads_and_answers(tiny_3b, media, tmp_path):
    model = make_model(tiny_3b, tmp_path)
    assert model.model.config.text_config.num_attention_heads // model.model.config.text_config.num_key_value_heads == 8
    answer = model.generate_until(requests(model, [{"question": "Q", "visuals": [media["video"]]}]))[0]
    assert not answer.text.startswith(FAILURE_PREFIX)
    assert model.max_model_len == 32768


def test_batch_size_above_one_keeps_one_conversation_per_request(tiny_7b, media, tmp_path):
    docs = [{"question": "First?", "visuals": [media["video"]]}, {"question": "Second?", "visuals": [media["silent"]]}]
    single = make_model(tiny_7b, tmp_path / "one")
    batched = make_model(tiny_7b, tmp_path / "two", batch_size=2)
    assert [a.text for a in batched.generate_until(requests(batched, docs))] == [
        a.text for a in single.generate_until(requests(single, docs))
    ]
    assert [r["input_hash"] for r in records(tmp_path / "two")] == [r["input_hash"] for r in records(tmp_path / "one")]


def test_image_files_frame_folders_and_several_videos_are_planned_like_any_media(model, media, tmp_path):
    """Image paths load as images; a folder of frames is a video (MVBench episodic_reasoning); two videos without
    audio each keep their own rate; a URL, and videos whose audio the processor cannot place, fail up front with the
    limitation named."""
    image = tmp_path / "photo.png"
    Image.new("RGB", (200, 150), "green").save(image)
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(12):
        Image.fromarray(sm.marked_frame(index, width=96, height=64)).save(frames / f"{index:05d}.jpg")
    docs = [
        {"question": "An image file?", "visuals": [str(image)]},
        {"question": "Frames?", "visuals": [str(frames)]},
        {"question": "Two silent videos?", "visuals": [media["silent"], media["silent"]]},
        {"question": "A URL?", "visuals": ["https://example.com/video.mp4"]},
        {"question": "One with audio, one without?", "visuals": [media["video"], media["silent"]]},
    ]
    answers = [a.text for a in model.generate_until(requests(model, docs, {"max_new_tokens": 3}))]
    by_question = {r["doc_id"]: r for r in records(model.provenance.folder.parent)[-len(docs) :]}
    assert not any(a.startswith(FAILURE_PREFIX) for a in answers[:3]), answers
    assert by_question[0]["media"][0]["kind"] == "image"
    folder_plan = by_question[1]["media"][0]
    assert folder_plan["kind"] == "video" and folder_plan["total_frames"] == 12
    assert folder_plan["frame_indices"][0] == 0 and folder_plan["frame_indices"][-1] == 11
    assert "download the file first" in answers[3]
    assert answers[4].startswith(FAILURE_PREFIX) and "use_audio_in_video" in answers[4]


def test_audio_past_300_s_in_a_standalone_clip_is_noted(model):
    long_clip = {"array": np.zeros(16_000 * 310, dtype=np.float32), "sampling_rate": 16_000}
    answer = model.generate_until(requests(model, [{"question": "Hear?", "visuals": [long_clip]}]))[0]
    record = records(model.provenance.folder.parent)[-1]
    assert not answer.text.startswith(FAILURE_PREFIX)
    assert record["media"][0]["audio_dropped_seconds"] == pytest.approx(10.0)
    assert any("not heard" in note for note in record["media"][0]["notes"])


def out_of_memory_on_first_generate(monkeypatch) -> None:
    """The next ``generate`` call raises CUDA's out-of-memory message (after the attempt recorded its plan); later
    calls run."""
    import omni_lmms_plugin.answering as answering

    real = answering.run_generate
    calls = []

    def out_of_memory_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(answering, "run_generate", out_of_memory_once)


def test_an_image_only_request_is_retried_smaller_after_out_of_memory(model, monkeypatch):
    """The retry of an image request feeds fewer image tokens than the failed attempt. Breaking check: ignoring the
    scale for images (the old behaviour, identical plans on every retry) fails the token assertion."""
    out_of_memory_on_first_generate(monkeypatch)
    docs = [{"question": "Big image?", "visuals": [Image.new("RGB", (1600, 1200), "red")]}]
    answer = model.generate_until(requests(model, docs))[0]
    first, second = records(model.provenance.folder.parent)[-1]["attempts"]
    assert not answer.text.startswith(FAILURE_PREFIX)
    assert first["outcome"] == "out_of_memory" and second["outcome"] == "answered"
    assert second["plan"][0]["total_tokens"] <= 0.7 * first["plan"][0]["total_tokens"] + 2
    assert second["input_tokens"] < first["input_tokens"]


def test_an_audio_only_request_is_retried_with_a_shorter_span_after_out_of_memory(model, monkeypatch):
    """The retry of a standalone audio request feeds a shorter span. Breaking check: ignoring the scale for audio clips
    (the same span on every retry, as before) fails the token assertions."""
    out_of_memory_on_first_generate(monkeypatch)
    noise = np.random.default_rng(0).standard_normal(16_000 * 40).astype(np.float32) * 0.1
    model.generate_until(
        requests(model, [{"question": "Hear?", "visuals": [{"array": noise, "sampling_rate": 16_000}]}])
    )
    first, second = records(model.provenance.folder.parent)[-1]["attempts"]
    assert first["outcome"] == "out_of_memory" and second["outcome"] != "out_of_memory"
    assert second["plan"][0]["seconds"] <= 0.7 * first["plan"][0]["seconds"] + 0.01
    assert second["plan"][0]["total_tokens"] < first["plan"][0]["total_tokens"]


def test_a_doc_to_visual_that_raises_or_exits_fails_its_sample_only(model, media):
    """Some lmms-eval tasks raise or call ``sys.exit`` in ``doc_to_visual`` on a missing video. Catches either escaping
    the sample: with ``SystemExit`` no longer caught (``except Exception`` in ``request.Request.visuals``) the whole
    ``generate_until`` stopped with SystemExit and this test failed."""
    import sys

    def doc_to_visual(doc):
        if doc["fault"] == "raise":
            raise FileNotFoundError("/data/videos/missing.mp4")
        if doc["fault"] == "exit":
            sys.exit("video not found")
        return [media["video"]]

    docs = [{"fault": "raise"}, {"fault": "exit"}, {"fault": None}]
    model.task_dict = {"t": {"test": docs}}
    instances = [
        Instance(
            "generate_until",
            ("Q", {"max_new_tokens": 4}, doc_to_visual, i, "t", "test"),
            i,
            {"task": "t", "doc_id": i, "repeats": 1},
        )  # fmt: skip
        for i in range(3)
    ]
    journal = model.provenance.samples_path
    before = len(journal.read_text().splitlines())
    answers = model.generate_until(instances)
    assert answers[0].text.startswith(FAILURE_PREFIX) and "FileNotFoundError" in answers[0].text
    assert answers[1].text.startswith(FAILURE_PREFIX) and "SystemExit: video not found" in answers[1].text
    assert not answers[2].text.startswith(FAILURE_PREFIX)
    written = [json.loads(line) for line in journal.read_text().splitlines()[before:]]
    assert [r["status"] for r in written] == ["failed", "failed", "answered"]
