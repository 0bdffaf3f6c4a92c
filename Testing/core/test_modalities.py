import numpy as np
import pytest
from medmodels.errors import InputError
from medmodels.modalities import (
    MODALITY_KEYS,
    AvailabilityMask,
    assign_modalities,
    check_distinct_sources,
    classify_name,
)


@pytest.mark.parametrize(
    "name,key",
    [
        # BraTS 2018-2020
        ("Brats18_2013_2_1_flair.nii.gz", "flair"),
        ("Brats18_2013_2_1_t1.nii.gz", "t1"),
        ("Brats18_2013_2_1_t1ce.nii.gz", "t1c"),
        ("Brats18_2013_2_1_t2.nii.gz", "t2"),
        # BraTS 2023 on
        ("BraTS-GLI-00001-000-t2f.nii.gz", "flair"),
        ("BraTS-GLI-00001-000-t1n.nii.gz", "t1"),
        ("BraTS-GLI-00001-000-t1c.nii.gz", "t1c"),
        ("BraTS-GLI-00001-000-t2w.nii.gz", "t2"),
        # scanner / PACS series names
        ("T1_MPRAGE", "t1"),
        ("T1 post", "t1c"),
        ("T1+C", "t1c"),
        ("T1 Gd", "t1c"),
        ("T2_FLAIR", "flair"),
        ("T2W_TSE", "t2"),
        ("t1_mprage_post", "t1c"),
        ("AX T1 PRE", "t1"),
        ("Sag T2 FLAIR", "flair"),
        ("T1 + C", "t1c"),
        ("MPRAGE", "t1"),
    ],
)
def test_classify_known_names(name, key):
    assert classify_name(name) == key


@pytest.mark.parametrize("name", ["Brats18_2013_2_1_seg.nii.gz", "localizer", "DWI_b1000", "ADC", ""])
def test_classify_unknown_names(name):
    assert classify_name(name) is None


def test_assign_both_brats_conventions_and_order_independent():
    names18 = [f"Case_{s}.nii.gz" for s in ("t2", "seg", "flair", "t1ce", "t1")]
    names23 = [f"Case-{s}.nii.gz" for s in ("t2w", "t1c", "t2f", "t1n")]
    for names in (names18, names23):
        a = assign_modalities(names)
        b = assign_modalities(list(reversed(names)))
        assert a == b
        assert list(a.assigned) == list(MODALITY_KEYS)
        assert len(set(a.assigned.values())) == 4  # never one volume for two modalities
    assert assign_modalities(names18).unknown == ["Case_seg.nii.gz"]


def test_assign_reports_ambiguity_instead_of_guessing():
    a = assign_modalities(["T1 post", "T1+C", "T2_FLAIR", "noise"])
    assert "t1c" not in a.assigned
    assert sorted(a.ambiguous["t1c"]) == ["T1 post", "T1+C"]
    assert a.assigned == {"flair": "T2_FLAIR"}
    assert a.unknown == ["noise"]
    assert "choose one for T1c" in a.ambiguities()[0]


def test_mask_basics():
    m = AvailabilityMask.from_keys(["t2", "flair"])
    assert m.available == (True, False, False, True)
    assert m.keys == ("flair", "t2") and m.missing_keys == ("t1", "t1c")
    assert m.label == "FLAIR+T2" and m.bits == "1001"
    np.testing.assert_array_equal(m.missing_vector(), [0, 1, 1, 0])
    assert AvailabilityMask.from_bits("1001") == m
    assert not m.is_complete and AvailabilityMask.from_bits("1111").is_complete


def test_all_subsets_in_paper_order():
    subsets = AvailabilityMask.all_subsets()
    assert len(subsets) == 15 and len(set(subsets)) == 15
    assert [s.label for s in subsets[:5]] == ["FLAIR", "T1", "T1c", "T2", "FLAIR+T1"]
    assert subsets[-1].is_complete
    assert len(AvailabilityMask.partial_subsets()) == 14


def test_empty_mask_is_an_error():
    with pytest.raises(InputError, match="No modality is available"):
        AvailabilityMask.from_keys([])
    with pytest.raises(InputError, match="Unknown modality"):
        AvailabilityMask.from_keys(["pd"])
    with pytest.raises(InputError):
        AvailabilityMask.from_bits("10")


def test_same_volume_for_two_modalities_is_an_error():
    with pytest.raises(InputError, match="both T1 and T1c"):
        check_distinct_sources({"t1": "/a.nii", "t1c": "/a.nii"})
    check_distinct_sources({"t1": "/a.nii", "t1c": "/b.nii"})
