"""`show-gpus` rows and tables on the shared catalogs, against figures worked out from the CSVs.

Each expected row names the CSV rows it comes from: the cheapest region by on-demand price, then
spot price; on GCP the accelerator row plus its host machine row in the same zone.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from stixd.planner.catalog import (
    Catalog,
    CatalogError,
    GpuCountRow,
    GpuNote,
    GpuOfferRow,
    open_catalog,
    render_show_gpus,
    show_gpus,
)
from tests.test_catalog import LAMBDA_HEADER, V100_INFO, shared_catalogs, write_csv


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return open_catalog(tmp_path / "home", {"STIX_CATALOG_DIR": str(shared_catalogs())})


def test_a100_8_one_table_per_matching_accelerator_cheapest_cloud_first(catalog: Catalog) -> None:
    # aws p4d.24xlarge: 21.9576 in us-east-1 and us-west-2; spot lowest in use1-az2 (5.968256).
    # azure Standard_ND96asr_v4: 27.197 in eastus (spot 3.01557) and westus2 (8.33373).
    # gcp: A100:8 23.47126 + a2-highgpu-8g 5.91582 everywhere in the US; spot lowest in
    #   us-east1-b: 7.56717 + 1.72151 = 9.28868.
    # "A100" also matches A100-80GB, as SkyPilot's name filter does:
    # aws p4de.24xlarge 27.447 / 10.680441 (use1-az1); azure Standard_ND96amsr_A100_v4 32.77 in
    # eastus and westus2, spot 8.44363 in westus2; gcp 31.43336 + 8.79698 = 40.23034,
    # spot 8.35411 + 3.95363 = 12.30774 in us-central1.
    assert render_show_gpus(show_gpus(catalog, "A100", 8)) == (
        "GPU   QTY  CLOUD  INSTANCE_TYPE        DEVICE_MEM  vCPUs  HOST_MEM  HOURLY_PRICE  HOURLY_SPOT_PRICE  REGION\n"  # noqa: E501
        "A100  8    aws    p4d.24xlarge         40GB        96     1152GB    $ 21.958      $ 5.968            us-east-1\n"  # noqa: E501
        "A100  8    azure  Standard_ND96asr_v4  -           96     900GB     $ 27.197      $ 3.016            eastus\n"  # noqa: E501
        "A100  8    gcp    a2-highgpu-8g        -           96     680GB     $ 29.387      $ 9.289            us-east1\n"  # noqa: E501
        "\n"
        "GPU        QTY  CLOUD  INSTANCE_TYPE              DEVICE_MEM  vCPUs  HOST_MEM  HOURLY_PRICE  HOURLY_SPOT_PRICE  REGION\n"  # noqa: E501
        "A100-80GB  8    aws    p4de.24xlarge              80GB        96     1152GB    $ 27.447      $ 10.680           us-east-1\n"  # noqa: E501
        "A100-80GB  8    azure  Standard_ND96amsr_A100_v4  -           96     1900GB    $ 32.770      $ 8.444            westus2\n"  # noqa: E501
        "A100-80GB  8    gcp    a2-ultragpu-8g             -           96     1360GB    $ 40.230      $ 12.308           us-central1"  # noqa: E501
    )


def test_a100_8_rows_carry_the_numbers(catalog: Catalog) -> None:
    rows = show_gpus(catalog, "a100", 8)
    gcp = [
        r
        for r in rows
        if isinstance(r, GpuOfferRow) and r.cloud == "gcp" and r.accelerator == "A100"
    ]
    [row] = gcp
    assert (row.price, row.spot_price) == pytest.approx((29.38708, 9.28868))
    assert msgspec.structs.replace(row, price=None, spot_price=None) == GpuOfferRow(
        accelerator="A100",
        count=8.0,
        cloud="gcp",
        instance_type="a2-highgpu-8g",
        gpu_memory_gib=None,
        vcpus=96.0,
        memory_gib=680.0,
        price=None,
        spot_price=None,
        region="us-east1",
    )


def test_h100_clouds_ordered_by_their_cheapest_offer(catalog: Catalog) -> None:
    # mithril 1.0 < hyperbolic 1.29 (no spot) < nebius 2.95 < gcp 9.79629 + 1.18251 (a3-highgpu-1g)
    # < aws p5.48xlarge 55.04 (spot 17.726969 in use1-az4) < azure 98.32 (spot 17.2634 westus2).
    rows = [r for r in show_gpus(catalog, "H100") if isinstance(r, GpuOfferRow)]
    assert [(r.cloud, r.instance_type) for r in rows] == [
        ("mithril", "h100-80gb.sxm.1x"),
        ("mithril", "h100-80gb.sxm.8x"),
        ("hyperbolic", "1x-H100-75-722"),
        ("hyperbolic", "2x-H100-149-1443"),
        ("hyperbolic", "3x-H100-224-2165"),
        ("nebius", "gpu-h100-sxm_1gpu-16vcpu-200gb"),
        ("nebius", "gpu-h100-sxm_8gpu-128vcpu-1600gb"),
        ("gcp", "a3-highgpu-1g"),
        ("gcp", "a3-highgpu-2g"),
        ("gcp", "a3-highgpu-4g"),
        ("gcp", "a3-highgpu-8g"),
        ("aws", "p5.48xlarge"),
        ("azure", "Standard_ND96isr_H100_v5"),
    ]
    text = render_show_gpus(show_gpus(catalog, "H100")).splitlines()
    assert text[0].split() == [
        "GPU",
        "QTY",
        "CLOUD",
        "INSTANCE_TYPE",
        "DEVICE_MEM",
        "vCPUs",
        "HOST_MEM",
        "HOURLY_PRICE",
        "HOURLY_SPOT_PRICE",
        "REGION",
    ]
    assert text[3].split() == [
        "H100",
        "1",
        "hyperbolic",
        "1x-H100-75-722",
        "80GB",
        "75",
        "722GB",
        "$",
        "1.290",
        "-",
        "default",
    ]
    assert text[8].split() == [
        "H100",
        "1",
        "gcp",
        "a3-highgpu-1g",
        "-",
        "26",
        "234GB",
        "$",
        "10.979",
        "$",
        "4.338",
        "us-central1",
    ]
    assert text[12].split() == [
        "H100",
        "8",
        "aws",
        "p5.48xlarge",
        "80GB",
        "192",
        "2048GB",
        "$",
        "55.040",
        "$",
        "17.727",
        "us-east-1",
    ]


def test_t4_on_gcp_uses_skypilots_n1_hosts(catalog: Catalog) -> None:
    # T4:1 -> n1-highmem-4: us-central1 0.35 + 0.2368, spot 0.12764 + 0.06262 = 0.19026
    #   (us-east1: 0.1385 + 0.07629 = 0.21479).
    # T4:2 -> >= 8 vCPUs, >= 32 GiB: n1-highmem-8: 0.7 + 0.4736; spot us-central1
    #   0.25527 + 0.1519 = 0.40717.
    # T4:4 -> >= 48 vCPUs, >= 192 GiB: n1-standard-64: 1.4 + 3.04; spot us-east1-b
    #   0.55401 + 0.63673 = 1.19074 (us-central1: 0.51055 + 0.73281 = 1.24336).
    assert render_show_gpus(show_gpus(catalog, "T4", infra="gcp")) == (
        "GPU  QTY  CLOUD  INSTANCE_TYPE   DEVICE_MEM  vCPUs  HOST_MEM  HOURLY_PRICE  HOURLY_SPOT_PRICE  REGION\n"  # noqa: E501
        "T4   1    gcp    n1-highmem-4    -           4      26GB      $ 0.587       $ 0.190            us-central1\n"  # noqa: E501
        "T4   2    gcp    n1-highmem-8    -           8      52GB      $ 1.174       $ 0.407            us-central1\n"  # noqa: E501
        "T4   4    gcp    n1-standard-64  -           64     240GB     $ 4.440       $ 1.191            us-east1"  # noqa: E501
    )


def test_infra_with_a_region_keeps_that_region_only(catalog: Catalog) -> None:
    rows = [r for r in show_gpus(catalog, "T4", 1, "gcp/us-east1") if isinstance(r, GpuOfferRow)]
    assert [(r.instance_type, r.region, round(r.spot_price or 0, 5)) for r in rows] == [
        ("n1-highmem-4", "us-east1", 0.21479)
    ]


def test_without_a_name_the_common_gpus_and_their_quantities(catalog: Catalog) -> None:
    # Quantities over all six catalogs; A100:16 is absent because GCP's file has no
    # a2-megagpu-16g to carry it; V100-32GB is in no catalog here.
    assert render_show_gpus(show_gpus(catalog, None)) == (
        "COMMON_GPU  AVAILABLE_QUANTITIES\n"
        "A10         1, 2\n"
        "A10G        1, 4, 8\n"
        "A100        1, 2, 4, 8\n"
        "A100-80GB   1, 2, 4, 8\n"
        "B200        8\n"
        "H100        1, 2, 3, 4, 8\n"
        "H200        1, 8\n"
        "L4          1, 2, 4, 8\n"
        "L40S        1, 2, 4\n"
        "T4          1, 2, 4, 8\n"
        "V100        1, 2, 4, 8\n"
        "\n"
        "Hint: use -a/--all to see all accelerators (including non-common ones) and pricing."
    )


def test_infra_limits_the_quantities_to_one_cloud(catalog: Catalog) -> None:
    rows = show_gpus(catalog, None, infra="azure")
    assert [(r.accelerator, r.quantities) for r in rows if isinstance(r, GpuCountRow)] == [
        ("A10", [1.0, 2.0]),
        ("A100", [8.0]),
        ("A100-80GB", [1.0, 2.0, 4.0, 8.0]),
        ("H100", [8.0]),
        ("T4", [1.0, 4.0]),
        ("V100", [1.0, 2.0, 4.0]),
    ]


def test_all_adds_other_gpus_and_every_price_table_without_region(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_csv(
        home / "catalogs",
        "lambda",
        [
            LAMBDA_HEADER,
            "gpu_1x_a6000,A6000,1.0,14.0,100.0,1.09,us-east-1,,",
            "gpu_1x_a6000,A6000,1.0,14.0,100.0,0.99,us-west-1,,",
            "gpu_1x_gh200,GH200,1.0,64.0,432.0,1.49,us-east-3,,",
            f"gpu_8x_v100,V100,8.0,92.0,448.0,6.32,us-east-1,{V100_INFO},",
        ],
    )
    catalog = open_catalog(home, {"STIX_CATALOG_DIR": str(shared_catalogs())})
    rows = show_gpus(catalog, None, all=True)
    counts = [(r.section, r.accelerator) for r in rows if isinstance(r, GpuCountRow)]
    assert ("OTHER_GPU", "A6000") in counts and ("OTHER_GPU", "GH200") in counts
    assert [a for s, a in counts if s == "OTHER_GPU"] == ["A6000", "GH200"]
    offers = [r for r in rows if isinstance(r, GpuOfferRow)]
    assert all(r.region is None for r in offers)
    assert {r.accelerator for r in offers} == {a for _, a in counts}
    # the cheapest A6000 region is us-west-1, but --all shows no REGION column
    (a6000,) = [r for r in offers if r.accelerator == "A6000"]
    assert (a6000.cloud, a6000.price) == ("lambda", 0.99)
    text = render_show_gpus(rows)
    assert "OTHER_GPU  AVAILABLE_QUANTITIES\nA6000      1\nGH200      1" in text
    assert "REGION" not in text and "Hint:" not in text
    assert "A6000  1    lambda  gpu_1x_a6000   -           14     100GB     $ 0.990       -" in text


def test_nothing_found_is_a_note_not_an_error(catalog: Catalog) -> None:
    assert show_gpus(catalog, "B200", 4, "aws") == [
        GpuNote(
            "Resources 'B200' with requested quantity 4 not found on aws. "
            "To show available accelerators, run: stixctl show-gpus --all"
        )
    ]


def test_bad_arguments_are_catalog_errors(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match="--all is only allowed without a GPU name"):
        show_gpus(catalog, "T4", all=True)
    with pytest.raises(CatalogError, match=r"Unknown cloud 'azur' \(did you mean 'azure'\?\)"):
        show_gpus(catalog, "T4", infra="azur")
    with pytest.raises(CatalogError, match="No catalog for lambda"):
        show_gpus(catalog, "T4", infra="lambda")


def test_a_broken_cloud_is_skipped_with_a_note_when_listing_all(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_csv(home / "catalogs", "lambda", [LAMBDA_HEADER, "x,V100,oops,1,1,1,r,,"])
    catalog = open_catalog(home, {"STIX_CATALOG_DIR": str(shared_catalogs())})
    rows = show_gpus(catalog, "V100", 8)
    assert isinstance(rows[0], GpuNote) and rows[0].text.startswith("Skipped lambda: Malformed")
    assert {r.cloud for r in rows if isinstance(r, GpuOfferRow)} == {
        "aws",
        "gcp",
    }  # no azure V100:8


def test_gcp_tpu_rows_are_tpu_vms_in_their_own_table(tmp_path: Path) -> None:
    header = (shared_catalogs() / "v8" / "gcp" / "vms.csv").read_text().splitlines()[0]
    write_csv(
        tmp_path,
        "gcp",
        [
            header,
            "n1-standard-8,8.0,30.0,,,,us-central1,us-central1-a,0.38,0.1",
            ",,,tpu-v5p-8,1,tpu-v5p-8,us-central1,us-central1-a,8.4,3.1",
        ],
    )
    catalog = open_catalog(tmp_path / "home", {"STIX_CATALOG_DIR": str(tmp_path)})
    tpu = [o for o in catalog.offers("gcp") if o.accelerator == "tpu-v5p-8"]
    assert [(o.instance_type, o.vcpus, o.price, o.spot_price) for o in tpu] == [
        ("TPU-VM", None, 8.4, 3.1)  # no host: a TPU VM is priced as the TPU alone
    ]
    assert show_gpus(catalog, None)[0] == GpuCountRow("GOOGLE_TPU", "tpu-v5p-8", [1.0])
    assert "TPU-VM         -           -      -         $ 8.400" in render_show_gpus(
        show_gpus(catalog, "TPU-V5P")
    )
