"""The spec's JSON Schema, as an editor's YAML language server reads it: shipped, current, and right about the
shipped specs (valid) and the tests' malformed ones (invalid)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from search import SpecError, resolve
from search.spec._schema import bounds_rule, coerce, schema_of
from search.spec._sections import SCHEMA as SECTIONS
from tests.conftest import console, readme
from tests.test_spec import BAD, BASE, with_

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "spaces" / "tune-run.schema.json"
SPECS = sorted([*ROOT.glob("spaces/*.yaml"), *ROOT.glob("benchmarks/*.yaml")])
REGENERATE = "tune-run --schema > spaces/tune-run.schema.json"

# BAD's cases whose rule spans several keys or values, which a JSON Schema cannot state: resolve alone refuses them.
ACROSS_KEYS = {
    "space.train.lr": "low <= high compares two values of one list",
    "data.storage": "stream against the dataset's kind (digits is loaded whole)",
    "experiment.metric": "a binary-only metric against the dataset's number of classes",
}
BEYOND = {
    ("space.train.lr", repr({"loguniform": [0.1, 0.01]})),
    ("data.storage", repr("stream")),
    ("experiment.metric", repr("val_auc")),
}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SHIPPED.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_shipped_schema_is_what_tune_run_schema_prints_now(tmp_path):
    """In a process of its own: a test's own registered model (tests/test_models.py) is no part of the product."""
    r = readme("tune-run --schema", tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == json.loads(SHIPPED.read_text()), f"stale: regenerate it with `{REGENERATE}`"


def test_the_key_reference_of_spaces_readme_is_made_from_the_models(tmp_path):
    r = console("tune-run", "--schema", "reference", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (ROOT / "spaces" / "README.md").read_text()
    begin, end = "<!-- begin: tune-run --schema reference -->\n", "<!-- end: tune-run --schema reference -->"
    shown = text[text.index(begin) + len(begin) : text.index(end)]
    assert shown == r.stdout, "spaces/README.md's key reference drifted: paste `tune-run --schema reference` into it"
    for key in ("lr:", "fidelity:", "max_failures:", "randaugment_group:", "depth:", "| `conv1` |"):  # every section
        assert key in shown
    # An example keeps its order where order means something: the first objective is the study's metric.
    assert "objectives: {val_acc: max, latency_ms: min}" in shown
    r = console("tune-run", cwd=tmp_path)  # no spec and no --schema: argparse's usage line
    assert r.returncode == 2 and "the following arguments are required: spec" in r.stderr


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_every_shipped_spec_points_at_the_schema_and_keeps_to_it(path, validator):
    first = path.read_text().splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first.startswith(prefix), f"{path.name}: the first line should be {prefix}<path to {SHIPPED.name}>"
    assert (path.parent / first[len(prefix) :]).resolve() == SHIPPED
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert not errors, errors


def test_the_schema_knows_every_key_with_its_meaning(validator):
    """Completion and hover text: every key of every section has a description, and the model's keys are the chosen
    model's (a vit key under a cnn is underlined)."""
    schema = validator.schema
    for name, section in schema["$defs"].items():
        for key, prop in section.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{key} has no description"
            # a registered model's argument undocumented in its builder's Args: gets the registry's stand-in
            assert not prop["description"].endswith(f"'s {key}"), f"{name}.{key}: no Args: line in its builder"
    assert not validator.is_valid(with_("model.depth", 6))  # cnn has no depth
    assert validator.is_valid({**BASE, "model": {"name": "vit", "depth": 6}})
    assert validator.is_valid({**BASE, "model": {"name": "timm/resnet18", "drop_rate": 0.1}})  # the library's own


@pytest.mark.parametrize("change,path,words", BAD, ids=[b[1] + "-" + str(i) for i, b in enumerate(BAD)])
def test_each_malformed_spec_of_the_tests_breaks_the_schema(change, path, words, validator):
    if (change[0], repr(change[1])) in BEYOND:
        assert validator.is_valid(with_(*change)), f"{change} is listed as beyond a schema but the schema refuses it"
        return
    assert not validator.is_valid(with_(*change)), f"the schema takes {change}, which resolve refuses ({words})"


def test_the_cases_beyond_a_schema_are_cases_of_the_spec_tests():
    assert BEYOND <= {(change[0], repr(change[1])) for change, _, _ in BAD}
    assert {key for key, _ in BEYOND} == set(ACROSS_KEYS)  # each with its reason


def _outside(bounds):
    """A value just outside a key's range, for each of its bounds."""
    step = {">=": -1, ">": 0, "<=": 1, "<": 0}
    return [v + step[op] for op, v in bounds]


def test_every_ranged_key_refuses_a_value_outside_its_range_in_one_line_and_in_the_schema(backend, validator):
    """The models' ranges are the rules: resolve states each with the value, and the schema refuses the same."""
    sections = {**SECTIONS, **backend.section_schemas(BASE)}
    checked = []
    for section, model in sections.items():
        for key, entry in (schema_of(model) if model else {}).items():
            for value in _outside(entry.bounds):
                spec = with_(f"{section}.{key}", value)
                with pytest.raises(SpecError) as err:
                    resolve(spec, backend, file="s.yaml")
                rule = bounds_rule(key, entry.bounds)
                line = f"s.yaml: {section}.{key}: {rule} must hold, got {key}={coerce(value, entry.type)}"
                assert str(err.value) == line
                assert not validator.is_valid(spec), f"the schema takes {section}.{key}={value}"
                checked.append(f"{section}.{key}")
    assert {"train.epochs", "data.val_fraction", "search.budget_split", "final.time_limit_s"} <= set(checked)


def test_every_key_may_be_null_as_resolve_reads_it_and_a_branch_may_name_the_model(validator):
    """A null value is the key's default to resolve, so the schema takes it for every key but a required one; a
    spec whose branch names the model may leave the model section null (cars-hyperband.yaml leaves it out)."""
    schema = validator.schema
    for name in ("experiment", "train", "search", "scheduler", "resources", "tracking", "final"):
        section = schema["$defs"][schema["properties"][name]["anyOf"][0]["$ref"].rsplit("/", 1)[-1]]
        for key in section["properties"]:
            spec = with_(f"{name}.{key}", None)
            errors = [e.message for e in validator.iter_errors(spec)]
            assert not errors, (f"{name}.{key}", errors)
    branch = {"family": {"grid": [{"model.name": "cnn"}, {"model.name": "vit", "model.depth": 2}]}}
    assert validator.is_valid({**BASE, "model": None, "space": branch})


def test_a_list_key_takes_no_numeric_range(backend, validator):
    """train.milestones is a list of integers, data.mean of numbers: a range draws one number, which is no list."""
    for key, dist in (("train.milestones", {"randint": [2, 5]}), ("data.mean", {"uniform": [0.1, 0.5]})):
        spec = with_(f"space.{key}", dist)
        with pytest.raises(SpecError, match="gives numbers but the key is not numeric"):
            resolve(spec, backend, file="s.yaml")
        assert not validator.is_valid(spec)


@pytest.mark.parametrize(
    "search,scheduler,refused",
    [
        ({"algorithm": "bohb"}, None, "search.algorithm=bohb needs scheduler.name=hyperband"),
        ({"algorithm": "bohb"}, {"name": "asha"}, "search.algorithm=bohb needs scheduler.name=hyperband"),
        ({"algorithm": "optuna"}, {"name": "pbt"}, "pbt mutates trials itself"),
        ({"algorithm": "bohb"}, {"name": "hyperband"}, None),
        (None, {"name": "pbt"}, None),  # a null section is its defaults: the random searcher
        ({"algorithm": "grid"}, {"name": "pbt"}, None),
    ],
)
def test_a_searcher_and_its_scheduler_pair_alike_in_resolve_and_in_the_schema(
    backend, validator, search, scheduler, refused
):
    """The rules between search.algorithm and scheduler.name are validators of the model of a spec's rules across
    sections (search/spec/_rules.py: Study) and if/then cases of the schema: an editor underlines what tune-run
    refuses, and no more."""
    spec = {**with_("space.train.lr", {"choice": [1e-3, 1e-2]}), "search": search, "scheduler": scheduler}
    assert validator.is_valid(spec) == (refused is None)
    if refused is None:
        resolve(spec, backend, file="s.yaml")
        return
    with pytest.raises(SpecError) as exc:
        resolve(spec, backend, file="s.yaml")
    assert str(exc.value).startswith(f"s.yaml: scheduler.name: {refused}"), str(exc.value)
