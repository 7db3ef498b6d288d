"""The catalog's index, lazy loading, source order, staleness and error messages."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from stixd.planner.catalog import Catalog, CatalogError, CatalogMissing, open_catalog
from stixd.planner.catalog.layouts import LAYOUTS
from tests.test_catalog import (
    LAMBDA_HEADER,
    V100_INFO,
    Ticks,
    catalog_over,
    shared_catalogs,
    write_csv,
)

DAY = 86400.0


@pytest.fixture
def shared() -> Path:
    return shared_catalogs()


def index_files(home: Path) -> list[str]:
    d = home / "catalogs" / "index" / "v8"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def copy_cloud(shared: Path, root: Path, cloud: str) -> Path:
    dest = root / "v8" / cloud / "vms.csv"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shared / "v8" / cloud / "vms.csv", dest)
    return dest


# -- the index -------------------------------------------------------------------------------


def test_index_is_built_once_and_reused_while_the_csv_is_unchanged(
    shared: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    first = catalog_over(shared, home, Ticks(1000.0))
    offers = list(first.offers("aws"))
    built = first.index_built_at("aws")
    assert index_files(home) == ["aws.msgpack"]

    again = catalog_over(shared, home, Ticks(5000.0))
    assert again.index_built_at("aws") == built  # read, not rebuilt
    assert list(again.offers("aws")) == offers


def test_index_is_rebuilt_when_the_csv_is_touched_or_changed(shared: Path, tmp_path: Path) -> None:
    root, home = tmp_path / "cat", tmp_path / "home"
    csv_path = copy_cloud(shared, root, "aws")
    built = catalog_over(root, home, Ticks(1000.0)).index_built_at("aws")

    st = csv_path.stat()
    os.utime(csv_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = catalog_over(root, home, Ticks(2000.0))
    assert touched.index_built_at("aws") > built
    assert len(touched.offers("aws")) == 447

    with csv_path.open("a") as f:
        f.write("x9.large,,,2.0,8.0,,0.1,0.05,us-east-1,use1-az1,x86_64\n")
    changed = catalog_over(root, home, Ticks(3000.0))
    assert len(changed.offers("aws")) == 448
    assert changed.offers("aws")[-1].instance_type == "x9.large"


def test_a_corrupt_index_is_rebuilt_not_trusted(shared: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    catalog_over(shared, home).offers("nebius")
    (home / "catalogs" / "index" / "v8" / "nebius.msgpack").write_bytes(b"\x93garbage")
    assert len(catalog_over(shared, home).offers("nebius")) == 61


def test_loading_one_cloud_loads_no_other(shared: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    c = catalog_over(shared, home)
    assert c.clouds() == ["aws", "azure", "gcp", "nebius", "hyperbolic", "mithril"]
    assert c.loaded() == [] and index_files(home) == []
    c.offers("nebius")
    assert c.loaded() == ["nebius"]
    assert index_files(home) == ["nebius.msgpack"]
    assert c.canonical_accelerator("h100") == "H100"  # from accelerators.csv, no cloud loaded
    assert c.loaded() == ["nebius"]


def test_summaries_give_counts_and_cheapest_prices(shared: Path, tmp_path: Path) -> None:
    c = catalog_over(shared, tmp_path / "home")
    by_name = {s.name: s for s in c.summaries("aws")}
    assert by_name["A100"].counts == [8.0]
    assert by_name["T4"].counts == [1.0, 4.0, 8.0]
    assert by_name["A100"].min_price == 21.9576
    assert by_name["A100"].min_spot_price == 5.968256


def test_an_unwritable_index_dir_is_a_problem_not_a_failure(shared: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "catalogs" / "index").mkdir(parents=True)
    (home / "catalogs" / "index" / "v8").write_text("a file where the index dir should be")
    c = catalog_over(shared, home)
    assert len(c.offers("mithril")) == 4
    assert any("Could not save the mithril catalog index" in p for p in c.problems())


# -- sources, age, staleness -----------------------------------------------------------------


def test_stix_catalog_dir_wins_over_the_cache(shared: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_csv(
        home / "catalogs", "hyperbolic", [LAMBDA_HEADER, "only-in-cache,,,1,1,0.01,default,,"]
    )
    assert [o.instance_type for o in open_catalog(home, {}).offers("hyperbolic")] == [
        "only-in-cache"
    ]
    env = {"STIX_CATALOG_DIR": str(shared)}
    assert len(open_catalog(home, env).offers("hyperbolic")) == 3


def test_a_stale_cached_catalog_is_one_sentence_in_problems(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = write_csv(home / "catalogs", "lambda", [LAMBDA_HEADER, "cpu_4x,,,4,16,0.2,us-east-1,,"])
    names = home / "catalogs" / "v8" / "common" / "accelerators.csv"
    names.parent.mkdir(parents=True)
    names.write_text("AcceleratorName,Clouds\nT4,['AWS']\n")
    now = 2_000_000_000.0
    os.utime(path, (now - 10 * DAY, now - 10 * DAY))
    c = Catalog(open_catalog(home, {"STIX_CATALOG_STALE_DAYS": "7"}).sources, clock=lambda: now)
    assert c.age("lambda") == pytest.approx(10 * DAY)
    assert c.problems() == [
        "The lambda catalog is 10 days old (older than 7); "
        "run `stixctl catalog update lambda` to refresh it."
    ]
    fresh = Catalog(
        open_catalog(home, {"STIX_CATALOG_STALE_DAYS": "30"}).sources, clock=lambda: now
    )
    assert fresh.problems() == []


def test_no_catalog_at_all_is_a_problem_and_a_clear_error(tmp_path: Path) -> None:
    c = open_catalog(tmp_path / "home", {})
    assert c.clouds() == []
    assert c.age("aws") is None
    assert [p.split(";")[0] for p in c.problems()] == ["No instance catalogs found"]
    with pytest.raises(
        CatalogMissing, match=r"No catalog for aws: run `stixctl catalog update aws`"
    ) as e:
        c.offers("aws")
    assert e.value.cloud == "aws"


def test_bad_stale_days_setting_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="STIX_CATALOG_STALE_DAYS='soon' is not a positive"):
        open_catalog(tmp_path, {"STIX_CATALOG_STALE_DAYS": "soon"})


# -- errors ----------------------------------------------------------------------------------


def test_unknown_cloud_suggests_the_closest(shared: Path, tmp_path: Path) -> None:
    c = catalog_over(shared, tmp_path / "home")
    with pytest.raises(CatalogError, match=r"Unknown cloud 'gpc' \(did you mean 'gcp'\?\)\.$"):
        c.offers("gpc")
    assert isinstance(CatalogError("x"), ValueError)
    assert len(c.offers("GCP")) == 561  # cloud names are case-insensitive


@pytest.mark.parametrize(
    ("lines", "where"),
    [
        (
            [LAMBDA_HEADER, "a,,,4,16,0.2,r1,,", "b,,,4,16,cheap,r1,,"],
            r"line 3, column 'Price': expected a number, got 'cheap'",
        ),
        (
            [LAMBDA_HEADER, "a,,,4,16,0.2,r1,"],
            r"line 2: expected 9 columns as in the header, found 8",
        ),
        (
            [LAMBDA_HEADER, "a,V100,,4,16,0.2,r1,,"],
            r"line 2, column 'AcceleratorCount': empty for accelerator 'V100'",
        ),
        ([LAMBDA_HEADER, ",,,4,16,0.2,r1,,"], r"line 2, column 'InstanceType': the value is empty"),
        (
            [LAMBDA_HEADER, "a,,,-4,16,0.2,r1,,"],
            r"line 2, column 'vCPUs': expected a non-negative number",
        ),
        (
            ["InstanceType,vCPUs,MemoryGiB,Price", "a,1,1,1"],
            r"line 1: the header lacks column\(s\) AcceleratorName",
        ),
        ([LAMBDA_HEADER], r"has a header but no data rows"),
    ],
)
def test_malformed_csv_names_file_line_and_column(
    tmp_path: Path, lines: list[str], where: str
) -> None:
    path = write_csv(tmp_path, "lambda", lines)
    c = catalog_over(tmp_path, tmp_path / "home")
    with pytest.raises(CatalogError, match=where) as e:
        c.offers("lambda")
    assert str(path) in str(e.value)
    assert str(e.value) in c.problems()


def test_malformed_gcp_row_names_its_line(tmp_path: Path, shared: Path) -> None:
    header = (shared / "v8" / "gcp" / "vms.csv").read_text().splitlines()[0]
    write_csv(tmp_path, "gcp", [header, ",,,,,,us-central1,us-central1-a,1.0,0.5"])
    with pytest.raises(
        CatalogError, match="line 2, column 'InstanceType': a row needs an InstanceType"
    ):
        catalog_over(tmp_path, tmp_path / "home").offers("gcp")


# -- any v8 vms.csv in the common layout ----------------------------------------------------


def test_lambda_column_set_loads_through_the_shared_flat_reader(tmp_path: Path) -> None:
    assert "lambda" not in LAYOUTS  # no reader of its own
    write_csv(
        tmp_path,
        "lambda",
        [
            LAMBDA_HEADER,
            "cpu_4x_general,,,4.0,16.0,0.2,us-east-1,,",
            f"gpu_8x_v100,V100,8.0,92.0,448.0,6.32,us-east-1,{V100_INFO},",
        ],
    )
    gpu = catalog_over(tmp_path, tmp_path / "home").offers("lambda")[1]
    assert (gpu.instance_type, gpu.accelerator, gpu.accelerator_count) == (
        "gpu_8x_v100",
        "V100",
        8.0,
    )
    assert (gpu.vcpus, gpu.memory_gib, gpu.price, gpu.spot_price) == (92.0, 448.0, 6.32, None)
    assert (gpu.region, gpu.zone, gpu.gpu_memory_gib) == ("us-east-1", None, 16.0)


def test_reordered_columns_with_zone_load_by_name(tmp_path: Path) -> None:
    # RunPod's order: Region before SpotPrice before Price, and an AvailabilityZone column.
    header = (
        "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,"
        "Region,SpotPrice,Price,AvailabilityZone,GpuInfo"
    )
    write_csv(
        tmp_path,
        "runpod",
        [header, "1x_A100-80GB_SECURE,A100-80GB,1.0,8.0,117.0,CA,1.19,1.39,CA-MTL-1,"],
    )
    o = catalog_over(tmp_path, tmp_path / "home").offers("runpod")[0]
    assert (o.region, o.zone, o.price, o.spot_price, o.accelerator) == (
        "CA",
        "CA-MTL-1",
        1.39,
        1.19,
        "A100-80GB",
    )


def test_crlf_and_bom_files_load(tmp_path: Path) -> None:
    path = tmp_path / "v8" / "vast" / "vms.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(
        ("\ufeff" + LAMBDA_HEADER + "\r\n" + "1x-A100,A100,1,4,8,0.8,any,,0.5\r\n").encode()
    )
    o = catalog_over(tmp_path, tmp_path / "home").offers("vast")[0]
    assert (o.instance_type, o.spot_price) == ("1x-A100", 0.5)


def test_a_cloud_stix_does_not_know_loads_when_its_catalog_is_there(tmp_path: Path) -> None:
    write_csv(tmp_path, "newcloud", [LAMBDA_HEADER, "g1,L4,1,8,32,0.7,eu-1,,0.3"])
    c = catalog_over(tmp_path, tmp_path / "home")
    assert c.clouds() == ["newcloud"]
    assert c.offers("NewCloud")[0].accelerator == "L4"
