"""`siglip-adapter` as a new user meets it: every mistake on the command line is one line on
stderr, exit status 2, naming the flag or the file and key it came from and the nearest valid
names; a bug of the kit's own still shows its traceback; and ``--help`` imports nothing heavy."""

import shutil
import subprocess
import sys

import pytest
import yaml

from siglip_adapter.cli import main


def _one_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    return err[0]


# (arguments, words the line must hold: where the mistake came from, then the suggestion)
MISTAKES = {
    "a dataset name": (["embed", "nosuch"], ["siglip-adapter embed: unknown dataset 'nosuch'", "params/nosuch.yaml", "fashion_mnist"]),
    "a card's dataset": (["card", "nosuch"], ["siglip-adapter card: unknown dataset 'nosuch'", "digits"]),
    "an ablation's dataset typo": (["ablation", "fashion_mnst"], ["unknown dataset 'fashion_mnst'", "did you mean 'fashion_mnist'?"]),
    "a protocol": (["embed", "digits", "--protocol", "corected"], ["embed: --protocol: unknown protocol 'corected'",
                                                                  "did you mean 'corrected'?"]),
    "a protocol's switch": (["captions", "digits", "--protocol", "corrected+imagenet_preproces"],
                            ["--protocol: unknown switch 'imagenet_preproces'", "did you mean 'imagenet_preprocess'?"]),
    "a backbone": (["embed", "digits", "--backbone", "siglp"], ["--backbone: unknown backbone 'siglp'", "did you mean 'siglip-b16'"]),
    "a card's backbone": (["card", "digits", "--backbone", "offline-conse2"], ["card: --backbone", "did you mean 'offline-conse'?"]),
    "an overlay": (["embed", "digits", "--overlay", "smok"], ["--overlay: unknown overlay 'smok'", "did you mean 'smoke'?"]),
    "an ablation's switch": (["ablation", "digits", "--switches", "author_templtes"],
                             ["siglip-adapter ablation: --switches: unknown switch 'author_templtes'", "did you mean 'author_templates'"]),
    "an ablation's overlay": (["ablation", "digits", "--overlay", "smok"], ["ablation: --overlay", "did you mean 'smoke'?"]),
    "a scan target": (["scan", "digts"], ["siglip-adapter scan: digts: neither a path nor a params/<dataset>.yaml name",
                                         "did you mean 'digits'?"]),
    "a kernel's protocols": (["kaggle", "--user", "me", "--kit-dataset", "me/kit", "--protocols", "corected"],
                             ["siglip-adapter kaggle: --protocols: unknown protocol 'corected'", "did you mean 'corrected'?"]),
    "a kernel's backbones": (["kaggle", "--user", "me", "--kit-dataset", "me/kit", "--datasets", "digits", "--backbones", "siglp-b16"],
                             ["kaggle: --backbones: unknown backbone 'siglp-b16'", "did you mean 'siglip-b16'"]),
    "a command": (["embedd", "digits"], ["siglip-adapter: argument command: invalid choice: 'embedd'", "'embed'"]),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_mistake_is_one_line_naming_where_it_came_from_and_the_nearest_names(capsys, mistake):
    argv, words = MISTAKES[mistake]
    if argv[0] == "embedd":  # argparse's own mistakes exit
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1, err
        line = err[0]
    else:
        line = _one_line(capsys, argv)
    assert all(w in line for w in words), line


def test_a_mistake_in_a_users_own_params_file_names_that_file_and_key(tmp_path, root, monkeypatch, capsys):
    shutil.copytree(root / "params", tmp_path / "params")
    mine = yaml.safe_load((root / "params" / "digits.yaml").read_text())
    del mine["dataset"]["source"]
    (tmp_path / "params" / "mine.yaml").write_text(yaml.safe_dump(mine))
    monkeypatch.setenv("SIGLIP_ADAPTER_ROOT", str(tmp_path))
    line = _one_line(capsys, ["embed", "mine"])
    assert "params/mine.yaml: dataset.source is required" in line and "defaults.yaml" not in line, line


def test_a_folder_of_loose_images_says_which_layout_scan_expected(tmp_path, capsys):
    from helpers import good_images

    for name, data in good_images().items():
        (tmp_path / name).write_bytes(data)
    line = _one_line(capsys, ["scan", str(tmp_path)])
    assert "no usable images" in line and "<root>/<class>/<image>" in line and "--regex" in line, line


def test_a_bug_of_our_own_still_shows_its_traceback(monkeypatch):
    from siglip_adapter import cli

    def broken(args):
        return {}["encoder"]

    monkeypatch.setattr(cli, "run_config", broken)
    with pytest.raises(KeyError):
        main(["embed", "digits"])


@pytest.mark.parametrize("argv", [["--help"], ["ablation", "--help"], ["predict", "--help"], ["card", "--help"]])
def test_help_imports_nothing_heavy(argv):
    probe = ("import sys\nfrom siglip_adapter.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'sklearn') if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60)
    assert "usage: siglip-adapter" in done.stdout and done.stderr.strip() == "[]", done.stderr
