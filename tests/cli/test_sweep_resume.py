"""`generate -m --resume`: finished jobs (same settings hash, video there) are skipped, the others run;
sweep.json, sweep.png and index.html list every job. One settings hash in config.json and in the video."""

from __future__ import annotations

import json
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import run_cli

from telefuser_cli.errors import UserError

FAST = ["recipe=tiny", "pipeline.num_inference_steps=2", "pipeline.num_frames=5", "prompt=a red ball"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TELEFUSER_DEBUG", raising=False)


def record(directory: Path) -> dict:
    return json.loads((directory / "config.json").read_text(encoding="utf-8"))


def video_metadata(path: Path) -> dict:
    """The JSON our writer puts in the mp4's comment tag."""
    import imageio_ffmpeg

    out = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8")
    comment = next(line for line in out.splitlines() if line.startswith("comment="))
    return json.loads(comment.removeprefix("comment=").replace("\\", ""))


class Cards(HTMLParser):
    """The cards of index.html: for each, its video src, config href, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict] = []
        self.depth = 0  # <div> nesting inside the current card

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and "card" in (attrs.get("class") or "").split():
            self.cards.append({"id": attrs.get("id"), "src": [], "href": [], "text": ""})
            self.depth = 1
        elif self.depth and tag == "div":
            self.depth += 1
        elif self.depth and tag == "video":
            self.cards[-1]["src"].append(attrs["src"])
        elif self.depth and tag == "a":
            self.cards[-1]["href"].append(attrs["href"])
        assert tag not in ("script", "link", "img"), f"index.html must be self-contained, found <{tag}>"

    def handle_endtag(self, tag):
        if self.depth and tag == "div":
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.cards[-1]["text"] += data


def page_cards(sweep: Path) -> list[dict]:
    from urllib.parse import unquote

    parser = Cards()
    parser.feed((sweep / "index.html").read_text(encoding="utf-8"))
    for card in parser.cards:
        for link in card["src"] + card["href"]:
            assert (sweep / unquote(link)).is_file(), f"{link} does not resolve from index.html"
    return parser.cards


def test_resume_skips_finished_jobs_and_reruns_the_failed_one(tmp_path, monkeypatch):
    import telefuser_cli.pipelines.generate as generate_module

    sweep = tmp_path / "sweep"
    args = ["generate", "-m", *FAST, "seed=1,2,3", f"hydra.sweep.dir={sweep}"]
    real = generate_module.generate

    def killed_in_the_third_job(settings, *rest, **kwargs):
        if settings.user.seed == 3:
            raise UserError("simulated: the third job was stopped")
        return real(settings, *rest, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(generate_module, "generate", killed_in_the_third_job)
        result = run_cli(*args)
    assert result.exit_code == 1, result.stderr
    names = ["000_seed=1", "001_seed=2", "002_seed=3"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == names
    assert record(sweep / names[2])["status"].startswith("failed: simulated")
    cards = page_cards(sweep)  # the failed run's page already shows its error
    assert len(cards) == 3 and "simulated: the third job was stopped" in cards[2]["text"]
    before = {name: (sweep / name / "config.json").stat().st_mtime_ns for name in names[:2]}
    videos = {name: (sweep / name / "video.mp4").stat().st_mtime_ns for name in names[:2]}

    result = run_cli(*args, "--resume")
    assert result.exit_code == 0, result.stderr
    jobs = json.loads((sweep / "sweep.json").read_text())["jobs"]
    assert [job["status"] for job in jobs] == ["skipped (done)", "skipped (done)", "done"]
    assert [job["swept"] for job in jobs] == [{"seed": "1"}, {"seed": "2"}, {"seed": "3"}]
    for name in names[:2]:  # not re-run: neither the record nor the video was written again
        assert (sweep / name / "config.json").stat().st_mtime_ns == before[name]
        assert (sweep / name / "video.mp4").stat().st_mtime_ns == videos[name]
    third = record(sweep / names[2])
    assert third["status"] == "done" and (sweep / names[2] / "video.mp4").is_file()
    for job, name in zip(jobs, names, strict=True):
        assert job["video"] == str(sweep / name / "video.mp4") and job["time_s"] > 0
        assert job["settings_sha256"] == record(sweep / name)["settings_sha256"]
    # one settings hash: the video's metadata carries the record's
    assert video_metadata(sweep / names[2] / "video.mp4")["settings_sha256"] == third["settings_sha256"]
    assert "config_sha256" not in video_metadata(sweep / names[2] / "video.mp4")

    cards = page_cards(sweep)
    assert len(cards) == 3 and all(len(card["src"]) == 1 and len(card["href"]) == 1 for card in cards)
    assert "skipped (done)" in cards[0]["text"] and "seed" in cards[0]["text"]
    from PIL import Image

    with Image.open(sweep / "sweep.png") as sheet:
        assert sheet.height >= 3 * 96  # one row per job

    before = {name: (sweep / name / "config.json").stat().st_mtime_ns for name in names}
    result = run_cli(*args, "--resume")  # nothing left to do
    assert result.exit_code == 0, result.stderr
    assert {job["status"] for job in json.loads((sweep / "sweep.json").read_text())["jobs"]} == {
        "skipped (done)"
    }
    assert {name: (sweep / name / "config.json").stat().st_mtime_ns for name in names} == before


def _fake_finished(directory: Path, settings_hash: str) -> None:
    directory.mkdir(parents=True)
    (directory / "video.mp4").write_bytes(b"a finished job's video")
    document = {"status": "done", "settings_sha256": settings_hash, "run": {"video": "video.mp4"}}
    (directory / "config.json").write_text(json.dumps(document))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["seed=1,2"], "--resume needs the sweep's folder: give hydra.sweep.dir=DIR"),
        (["seed=-1,2", "hydra.sweep.dir=s"], "--resume with user.seed=-1: a drawn seed differs on every run"),
    ],
)
def test_resume_refusals_in_one_line(extra, message):
    result = run_cli("generate", "-m", "--dry-run", "--resume", *FAST, *extra)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_resume_needs_a_sweep():
    result = run_cli("generate", "--dry-run", "--resume", *FAST, "hydra.run.dir=r")
    assert result.exit_code == 2 and "--resume continues a sweep: use it with -m" in result.stderr


def test_resume_refuses_finished_runs_of_other_settings(tmp_path):
    sweep = tmp_path / "sweep"
    _fake_finished(sweep / "000_seed=1", "0" * 64)
    args = ["generate", "-m", "--dry-run", "--resume", *FAST, "seed=1,2", f"hydra.sweep.dir={sweep}"]
    result = run_cli(*args)
    assert result.exit_code == 2
    assert "000_seed=1 holds a finished run of other settings" in " ".join(result.stderr.split())
    assert not (sweep / "001_seed=2").exists()  # refused before any job
    assert run_cli(*args, "output.overwrite=true").exit_code == 0  # replacing it is a choice


def test_resume_refuses_another_sweeps_finished_runs(tmp_path):
    sweep = tmp_path / "sweep"
    _fake_finished(sweep / "000_steps=9", "0" * 64)
    result = run_cli("generate", "-m", "--dry-run", "--resume", *FAST, "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert result.exit_code == 2
    assert "holds a finished run that this sweep has no job for" in " ".join(result.stderr.split())


def test_resume_reruns_interrupted_and_missing_jobs_without_overwrite(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["generate", "-m", "--dry-run", *FAST, "seed=1,2", f"hydra.sweep.dir={sweep}"]
    assert run_cli(*args).exit_code == 0
    first = sweep / "000_seed=1"
    document = record(first)
    document["status"] = "interrupted"
    (first / "video.mp4").write_bytes(b"half a video")  # a killed job's leftovers
    (first / "config.json").write_text(json.dumps(document))
    assert run_cli(*args).exit_code == 2  # without --resume the video is protected
    result = run_cli(*args, "--resume")
    assert result.exit_code == 0, result.stderr
    assert record(first)["status"] == "dry-run"


def test_the_settings_hash_covers_what_makes_the_video():
    from helpers import dump

    from telefuser_cli.config.hydra_app import HydraApp
    from telefuser_cli.config.settings_hash import settings_document, settings_sha256
    from telefuser_cli.config.validate import to_settings

    def settings(*overrides):
        return to_settings(HydraApp().checked_config(["recipe=tiny", "user.prompt='a'", *overrides]))

    base = settings_sha256(settings())
    assert base == settings_sha256(settings())  # no timestamp, nothing of the run
    assert base == settings_sha256(settings("output.overwrite=true"))
    for changed in (
        "user.seed=8",
        "pipeline.num_inference_steps=3",
        "output.video_quality=5",
        "user.prompt='b'",
    ):
        assert settings_sha256(settings(changed)) != base, changed
    covered = settings_document(settings())
    assert set(covered) == {"model", "pipeline", "user", "output"}
    assert "prompt_file" not in covered["user"] and "overwrite" not in covered["output"]
    assert "settings_sha256" not in dump("recipe=tiny", "prompt=a")  # dump-config runs nothing
