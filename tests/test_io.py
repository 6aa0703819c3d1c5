"""The embedding and label file readers of the `embviz` command, CSV rules first."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lightning_embviz._io import EmbeddingFileError, load_embeddings, load_labels


def floats(n: int = 30, width: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, width))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- CSV files pandas writes


PANDAS_FORMS = {
    "index_false": lambda df, p: df.to_csv(p, index=False),  # header 0,1,...,D-1
    "with_index": lambda df, p: df.to_csv(p),  # header ,0,1,...; index 0..N-1 first
    "named_columns": lambda df, p: df.add_prefix("f").to_csv(p, index=False),
    "named_columns_with_index": lambda df, p: df.add_prefix("f").to_csv(p),
    "tab_separated": lambda df, p: df.to_csv(p, sep="\t"),
    "text_index": lambda df, p: df.set_axis([f"img_{i}.png" for i in range(len(df))]).to_csv(p),
    "unnamed_multi_index": lambda df, p: df.set_axis(
        pd.MultiIndex.from_arrays([np.arange(len(df)) % 2, np.arange(len(df))])
    ).to_csv(p),
}


@pytest.mark.parametrize("form", sorted(PANDAS_FORMS))
def test_pandas_csv_reads_back_the_exact_array(tmp_path, form):
    x = floats()
    path = tmp_path / "x.csv"
    PANDAS_FORMS[form](pd.DataFrame(x), path)
    got = load_embeddings(path)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, x)  # no header row read as data, no index column


def test_pandas_index_after_shuffling_is_dropped(tmp_path):
    # df.sample / filtering leave an index that is not 0..N-1: still pandas' index column.
    df = pd.DataFrame(floats()).sample(frac=1.0, random_state=3)
    path = tmp_path / "x.csv"
    df.to_csv(path)
    np.testing.assert_array_equal(load_embeddings(path), df.to_numpy())


def test_integer_dataframe_with_index_is_read(tmp_path):
    # The leading comma makes the header unambiguous even when every value is whole.
    x = np.arange(24).reshape(8, 3)
    pd.DataFrame(x).to_csv(tmp_path / "x.csv")
    np.testing.assert_array_equal(load_embeddings(tmp_path / "x.csv"), x)


def test_integer_dataframe_without_index_is_refused_as_ambiguous(tmp_path):
    # "0,1,2" above whole numbers is pandas' header or a data row: refuse, say what to do.
    pd.DataFrame(np.arange(24).reshape(8, 3)).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(EmbeddingFileError, match=r"line 1 '0,1,2' is either pandas' default"):
        load_embeddings(tmp_path / "x.csv")
    with pytest.raises(EmbeddingFileError, match=r"add_prefix\('f'\).*or save the array as \.npy"):
        load_embeddings(tmp_path / "x.csv")


def test_selected_integer_column_names_are_refused(tmp_path):
    # df[[1, 3]] writes the header "1,3": not pandas' default numbering, and not data either.
    pd.DataFrame(floats())[[1, 3]].to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(EmbeddingFileError, match=r"line 1 '1,3' holds distinct whole numbers"):
        load_embeddings(tmp_path / "x.csv")


# ---------------------------------------------------------------- data rows are never eaten


def test_first_data_row_equal_to_0_to_d_minus_1_is_kept_when_written_as_floats(tmp_path):
    x = floats(20, 4)
    x[0] = np.arange(4)  # the values of pandas' header, written as 0.000e+00, 1.000e+00, ...
    np.savetxt(tmp_path / "a.csv", x, delimiter=",")
    pd.DataFrame(x).to_csv(tmp_path / "b.csv", index=False, header=False)  # "0.0,1.0,..."
    for name in ("a.csv", "b.csv"):
        np.testing.assert_array_equal(load_embeddings(tmp_path / name), x)


def test_whole_number_rows_are_data(tmp_path):
    # Repeated values (a row of zeros from %g) and numbers other than 0..D-1 are data.
    x = floats(20, 4)
    x[0] = 0.0
    np.savetxt(tmp_path / "zeros.csv", x, delimiter=",", fmt="%.17g")
    np.testing.assert_array_equal(load_embeddings(tmp_path / "zeros.csv"), x)
    ints = np.array([[5, 2, 9], [1, 1, 1], [0, 3, 4]])
    np.savetxt(tmp_path / "ints.csv", ints, delimiter=",", fmt="%d")
    np.testing.assert_array_equal(load_embeddings(tmp_path / "ints.csv"), ints)


def test_numpy_savetxt_header_comment_and_blank_lines(tmp_path):
    x = floats(10, 3)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", header="a,b,c")  # "# a,b,c"
    with open(tmp_path / "x.csv", "a") as handle:
        handle.write("\n\n")
    np.testing.assert_array_equal(load_embeddings(tmp_path / "x.csv"), x)
    path = write(tmp_path / "y.csv", "\ufeffx,y\n1.5,2\n3,4.25\n")  # a byte-order mark, as Excel
    np.testing.assert_array_equal(load_embeddings(path), [[1.5, 2.0], [3.0, 4.25]])


# ---------------------------------------------------------------- columns that are not features


def test_text_label_column_is_an_error_naming_it(tmp_path):
    df = pd.DataFrame(floats(10, 3)).add_prefix("f").assign(kind=["cat", "dog"] * 5)
    df.to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(
        EmbeddingFileError, match=r"column 4 'kind' is not numeric \(line 2: 'cat'\)"
    ):
        load_embeddings(tmp_path / "x.csv")


def test_text_column_without_header_is_an_error_naming_it(tmp_path):
    path = write(tmp_path / "x.csv", "0.1,0.2,cat\n0.3,0.4,dog\n")
    with pytest.raises(EmbeddingFileError, match=r"column 3 is not numeric \(line 1: 'cat'\)"):
        load_embeddings(path)


@pytest.mark.parametrize("name", ["label", "Class", "target", "id", "index"])
def test_numeric_label_or_id_column_is_not_used_as_a_feature(tmp_path, name):
    df = pd.DataFrame(floats(10, 3)).add_prefix("f")
    df[name] = np.arange(10) % 2
    df.to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(EmbeddingFileError, match=rf"column 4 '{name}' holds labels or row ids"):
        load_embeddings(tmp_path / "x.csv")


def test_named_index_before_numbered_columns_is_refused(tmp_path):
    pd.DataFrame(floats(10, 3)).rename_axis("sample").to_csv(tmp_path / "x.csv")
    with pytest.raises(EmbeddingFileError, match=r"columns \['sample'\] come before the numbered"):
        load_embeddings(tmp_path / "x.csv")


def test_index_read_back_by_pandas_is_refused(tmp_path):
    pd.DataFrame(floats(10, 3)).to_csv(tmp_path / "a.csv")
    pd.read_csv(tmp_path / "a.csv").to_csv(tmp_path / "b.csv", index=False)  # "Unnamed: 0,0,1,2"
    with pytest.raises(EmbeddingFileError, match=r"column 1 'Unnamed: 0' is the row index"):
        load_embeddings(tmp_path / "b.csv")


# ---------------------------------------------------------------- malformed files


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b\n1,2\n3\n", r"line 3 has 1 value, line 2 has 2"),
        ("a,b\n1,2\n3,\n", r"column 2 'b' is empty on line 3"),
        ("a,b\n", r"holds a header line but no data rows"),
        ("V1,V2\n1,0.5,0.2\n2,0.1,0.3\n", r"header \(line 1\) has 2 names but line 2 has 3"),
        ("", r"the CSV file is empty"),
    ],
)
def test_malformed_csv_messages(tmp_path, text, message):
    with pytest.raises(EmbeddingFileError, match=message):
        load_embeddings(write(tmp_path / "x.csv", text))


def test_expected_width_names_both_files(tmp_path):
    np.save(tmp_path / "x.npy", floats(10, 3))
    with pytest.raises(EmbeddingFileError, match=r"x\.npy: has width D=3 but real\.npy has D=4"):
        load_embeddings(tmp_path / "x.npy", 4, "real.npy")
    assert load_embeddings(tmp_path / "x.npy", 3).shape == (10, 3)


# ---------------------------------------------------------------- label files


LABEL_FORMS = {
    "series_index_false": lambda y, p: pd.Series(y).to_csv(p, index=False),  # header "0"
    "series_with_index": lambda y, p: pd.Series(y).to_csv(p),
    "named_series": lambda y, p: pd.Series(y, name="label").to_csv(p, index=False),
    "no_header": lambda y, p: np.savetxt(p, y, fmt="%d"),
    "label_column": lambda y, p: pd.DataFrame({"path": ["a.png"] * len(y), "label": y}).to_csv(p),
}


@pytest.mark.parametrize("form", sorted(LABEL_FORMS))
def test_label_csv_forms(tmp_path, form):
    y = np.arange(12) % 3
    LABEL_FORMS[form](y, tmp_path / "y.csv")
    got = load_labels(tmp_path / "y.csv", expected_rows=12)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, y)


def test_label_csv_ambiguous_without_a_row_count(tmp_path):
    pd.Series(np.arange(12) % 3).to_csv(tmp_path / "y.csv", index=False)
    with pytest.raises(EmbeddingFileError, match=r"line 1 '0' is either pandas' default header"):
        load_labels(tmp_path / "y.csv")


def test_text_labels_with_and_without_header(tmp_path):
    names = ["cat", "dog", "cat", "bird"]
    plain = write(tmp_path / "a.csv", "\n".join(names) + "\n")
    np.testing.assert_array_equal(load_labels(plain, expected_rows=4), names)
    headed = write(tmp_path / "b.csv", "species\n" + "\n".join(names) + "\n")
    np.testing.assert_array_equal(load_labels(headed, expected_rows=4), names)


def test_label_csv_with_several_unnamed_columns_is_refused(tmp_path):
    path = write(tmp_path / "y.csv", "a.png,1\nb.png,0\n")
    with pytest.raises(EmbeddingFileError, match=r"holds 2 columns; keep only the labels"):
        load_labels(path, expected_rows=2)


# ---------------------------------------------------------------- saved references


def saved_reference(path: Path, x: np.ndarray | None = None) -> Path:
    from lightning_embviz import RealReference

    RealReference(floats() if x is None else x, (2, 4)).save(path)
    return path


@pytest.mark.parametrize("name", ["ref.npz", "ref.pt", "ref.pth", "ref.bin", "ref"])
def test_saved_reference_is_recognised_by_content_whatever_its_name(tmp_path, name):
    from lightning_embviz._io import is_reference_file, load_reference

    x = floats()
    path = saved_reference(tmp_path / name, x)
    assert is_reference_file(path) and is_reference_file(str(path))
    ref = load_reference(path)
    assert ref.nearest_ks == (2, 4)
    np.testing.assert_array_equal(ref.real.numpy(), x)


def test_other_files_are_not_references(tmp_path):
    import torch

    from lightning_embviz._io import is_reference_file

    x = floats()
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", embeddings=x)
    np.savez(tmp_path / "tagged.npz", embeddings=x, format=np.asarray("other-tool"))
    np.savez(tmp_path / "numeric_tag.npz", embeddings=x, format=np.asarray(1))
    torch.save(torch.from_numpy(x), tmp_path / "x.pt")
    torch.save({"embeddings": torch.from_numpy(x), "format": "other"}, tmp_path / "d.pt")
    torch.save(torch.from_numpy(x), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    pd.DataFrame(x).to_csv(tmp_path / "x.csv")
    write(tmp_path / "garbage.npz", "PK not really a zip")
    (tmp_path / "dir.npz").mkdir()
    for name in ("x.npy", "x.npz", "tagged.npz", "numeric_tag.npz", "x.pt", "d.pt",
                 "legacy.pt", "x.csv", "garbage.npz", "dir.npz", "missing.npz"):  # fmt: skip
        assert not is_reference_file(tmp_path / name), name
    # The foreign "format" entries do not stop these files from being read as embeddings.
    np.testing.assert_array_equal(load_embeddings(tmp_path / "tagged.npz"), x)
    np.testing.assert_array_equal(load_embeddings(tmp_path / "d.pt"), x)


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_readers_refuse_a_reference_naming_where_it_goes(tmp_path, suffix):
    path = saved_reference(tmp_path / f"ref{suffix}")
    message = "is a saved RealReference (embviz reference), not an array of embeddings or labels"
    with pytest.raises(EmbeddingFileError, match=re.escape(message)):
        load_embeddings(path)
    with pytest.raises(EmbeddingFileError, match="take the place of REAL"):
        load_labels(path)


def test_load_reference_errors_are_one_line(tmp_path):
    from lightning_embviz._io import load_reference

    path = saved_reference(tmp_path / "ref.npz")
    with np.load(path) as data:
        entries = {key: data[key] for key in data.files}
    np.savez(tmp_path / "v99.npz", **{**entries, "format_version": np.asarray(99)})
    with pytest.raises(EmbeddingFileError, match="format version 99") as info:
        load_reference(tmp_path / "v99.npz")
    assert "\n" not in str(info.value)
    raw = bytearray(path.read_bytes())
    at = raw.find(entries["radii"].tobytes()[:16])
    raw[at] ^= 0x55
    (tmp_path / "flipped.npz").write_bytes(bytes(raw))
    with pytest.raises(
        EmbeddingFileError,
        match=r"is damaged: it cannot be read \(BadZipFile: Bad CRC-32 for file 'radii.npy'\)",
    ) as info:
        load_reference(tmp_path / "flipped.npz")
    assert "\n" not in str(info.value)


def _same_data_forms(tmp_path: Path, name: str, x: np.ndarray) -> dict[str, Path]:
    paths = {form: tmp_path / f"{name}_{form}" for form in ("npy", "pandas", "savetxt", "g9")}
    np.save(paths["npy"].with_suffix(".npy"), x)
    paths["npy"] = paths["npy"].with_suffix(".npy")
    for form in ("pandas", "savetxt", "g9"):
        paths[form] = paths[form].with_suffix(".csv")
    pd.DataFrame(x).to_csv(paths["pandas"], index=False)  # shortest float32 repr: 0.1
    np.savetxt(paths["savetxt"], x, delimiter=",")  # %.18e: the float32 values exactly
    np.savetxt(paths["g9"], x, delimiter=",", fmt="%.9g")
    return paths


def test_float32_data_as_csv_and_npy_give_identical_metrics_json(tmp_path):
    from lightning_embviz.cli import main

    rng = np.random.default_rng(5)
    real = rng.normal(size=(150, 6)).astype(np.float32)
    fake = (rng.normal(size=(140, 6)) * 1.1 + 0.2).astype(np.float32)
    reals = _same_data_forms(tmp_path, "real", real)
    fakes = _same_data_forms(tmp_path, "fake", fake)
    texts = {}
    for form in reals:
        got = load_embeddings(reals[form])
        assert got.dtype == np.float32, form
        np.testing.assert_array_equal(got, real)
        out = tmp_path / f"out_{form}"
        args = ["report", str(reals[form]), str(fakes[form]), "-o", str(out), "-q"]
        assert main([*args, "--projection", "pca"]) == 0
        texts[form] = (out / "metrics.json").read_text()
    assert texts["pandas"] == texts["npy"]  # fd differed in the 9th digit
    assert texts["savetxt"] == texts["npy"] and texts["g9"] == texts["npy"]


def test_float64_csv_stays_float64(tmp_path):
    x = np.random.default_rng(6).normal(size=(20, 4))  # float64: 17 digits per value
    pd.DataFrame(x).to_csv(tmp_path / "x.csv", index=False)
    got = load_embeddings(tmp_path / "x.csv")
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, x)
    big = np.arange(40, dtype=np.float64).reshape(20, 2) + 123456789.0  # > 2^24: not float32
    np.savetxt(tmp_path / "big.csv", big, delimiter=",", fmt="%d")
    got = load_embeddings(tmp_path / "big.csv")
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, big)
