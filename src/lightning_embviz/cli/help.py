"""The help text of ``embviz``: the epilog of the top level and of each command.

Plain text, shown verbatim (``RawDescriptionHelpFormatter``); the option lines themselves
are in :mod:`lightning_embviz.cli.parser`.
"""

__all__ = ["COMPARE_EPILOG", "MAIN_EPILOG", "REFERENCE_EPILOG", "REPORT_EPILOG"]


def _several_processes(command: str) -> str:
    """The paragraph on torchrun that ends the help of ``command`` (report or compare)."""
    return f"""\
Several processes: `torchrun --nproc-per-node N -m lightning_embviz {command} ...` (torchrun
is `python -m torch.distributed.run`; add --standalone on one machine) shares the distance
work over N processes with torch.distributed (gloo, on the CPU): each process computes the
k-NN radii and real-fake tests of its share of the rows, and the results are bit-identical
to one process. Every process reads the input files and checks them (a bad input ends all
of them with exit status 2); process 0 alone adds the Fréchet distance, the intervals
and the views, writes DIR and prints. torchrun gives each process one thread
(OMP_NUM_THREADS=1) unless OMP_NUM_THREADS is set: set it to about cores / N. One
process (plain `embviz`) is the default.
"""


_MEMORIZATION = """\
--train TRAIN (the generator's training embeddings, same D, or a saved TrainReference:
`embviz reference TRAIN --train -o train_ref.npz`, or TrainReference(train).save(path) in
Python) adds to metrics.json and the summary the
memorization numbers of FAKE, REAL being the held-out set
(lightning_embviz.memorization.compute_memorization): authenticity (fraction of fakes
farther from their nearest training sample than that sample is from its own nearest
training neighbour; drops when the generator copies), ct_score (the C_T data-copying
test over k-means cells of the training set: about 0 for an honest generator, strongly
negative when it copies, positive when it underfits; null when no cell holds 20 fakes
and a held-out real) and copy_fraction (fraction of fakes closer to the training set
than the 0.05 quantile of the reals' nearest-train distances: about 0.05 when honest),
and to DIR/samples_fake.csv the columns nearest_train_index and nearest_train_distance.
With --train-images (one image per TRAIN row, the image-file formats above) and
--fake-images, DIR/closest_train.png shows the --gallery-size fakes closest to the
training set, each beside its nearest training image, closest first, with the distance.
With --embedder and --train-images but no --train, the training images are embedded
with the same embedder (once) and are the training set.

"""


_EXTRA_METRICS = """\
--metrics LIST adds more metrics of the same sets to metrics.json (compare: also to
metrics.csv and the printed table): vendi (vendi and vendi_real, the Vendi score of the
fakes and of the reals with the cosine kernel: an effective number of distinct
samples; mode collapse shows as vendi below vendi_real), kd (kd, the KID statistic on
the full sets: unbiased MMD^2 with the cubic polynomial kernel, a small negative value
is legitimate when the distributions agree; kd_se, its jackknife standard error),
fd_inf (fd extrapolated to infinitely many fakes from fake subsets of 5 sizes drawn
with --seed; comparable across fake set sizes) and clipped (clipped_density and
clipped_coverage, calibrated to about 1 for identical distributions; report also adds
the per-fake realism_score (Kynkaanniemi et al. 2019: above 1 inside a kept real ball)
and rarity_score (Han et al. 2022: radius of the smallest real ball holding the fake,
empty outside every ball) to DIR/samples_fake.csv). --confidence gives these no
interval. A metric that cannot be computed is null in metrics.json with a warning.

"""

MAIN_EPILOG = """\
examples:
  embviz report real.npy fake.npy -o out/
  embviz compare real.npy ckpt_epoch10.npy ckpt_epoch20.npy -o cmp/
  embviz reference real.npy -k 3,5,10 -o ref.npz
  embviz reference train.npy --train -o train_ref.npz

Run `embviz report -h`, `embviz compare -h` or `embviz reference -h` for each command's
options, input formats and output files.
"""

REPORT_EPILOG = (
    """\
examples:
  embviz report real.npy fake.npy -o out/
  embviz report real.pt fake.pt -k 3 --projection pca,tsne,umap --max-samples 3000 --seed 1
  embviz report real.npz fake.npz --labels real_labels.npy --fake-labels fake_labels.npy
  embviz report real.npy fake.npy --real-images real_images.npy --fake-images fake_images.npy
  embviz reference real.npy -k 3,5,10 -o ref.npz && embviz report ref.npz fake.npy -k 10
  embviz report real.npy fake.npy --confidence 0.95 --seed 0
  embviz report real.npy fake.npy --train train.npy --train-images ti.npy --fake-images fi.npy
  embviz report real_images.npy fake_images.npy --embedder module:net.pt --train-images ti.npy
  embviz report real_images.npy fake_images.npy --embedder dinov2:facebook/dinov2-base

Input files: .npy, .npz (one array, or one named 'embeddings'/'features'),
.pt/.pth (a tensor, a list of tensors or a dict holding 'embeddings'), .csv (one row
per sample). Shape (N, D); both files need the same D.

REAL may also be a saved real reference (`embviz reference`, or RealReference.save in
Python; recognised by its content, whatever its name): the real set's k-NN radii are
then read, not recomputed, and the real embeddings it holds are used for the views,
the Fréchet distance and the tables. -k picks any k it was fitted with (default: its
first); metrics.json is identical to the one from the real embeddings file.

CSV: line 1 is a header when it holds names (f0,f1,...), starts with a comma
(pandas' df.to_csv(path); the index column is then dropped) or is 0,1,...,D-1 above
values written with decimals (df.to_csv(path, index=False); pandas writes floats as
0.0, never 0). Other lines of numbers are data, except two ambiguous cases that are
refused: 0,1,...,D-1 in a file of whole numbers only, and distinct whole numbers
(3,7) above decimals. Also refused, naming the column: a non-numeric or empty value,
and a column named label, class, target, id or index.

Writes DIR/metrics.json with precision, recall, density, coverage (the compute_prdc
keys), fd (Fréchet distance), num_real, num_fake, nearest_k (and per_class with
--labels), and PNGs: DIR/<method>.png for each projection, DIR/pca_coverage.png (the
k-NN balls, in the PCA frame or else the first method's) and, with labels,
DIR/<method>_classes.png and DIR/class_metrics.png.

Always writes the per-sample tables DIR/samples_real.csv (index, label, radius,
nearest_fake_distance, nearest_fake_ratio, covered, recalled) and DIR/samples_fake.csv
(index, label, ball_count, nearest_ball_ratio, inside_real_manifold); index is the row
in the input file, label is there with --labels / --fake-labels; pandas.read_csv reads
them. With --real-images, DIR/missed_real.png shows the reals whose k-NN ball holds no
fake, most clearly missed first (caption: nearest fake distance / own radius); with
--fake-images, DIR/outlier_fake.png shows the fakes outside every real ball, farthest
first (caption: distance / nearest ball's radius), and a row of the fakes deepest in the
real manifold for contrast. At most --gallery-size tiles each. Image files: .npy
(memory-mapped: only the shown images are read), .npz, .pt/.pth, shape (N, C, H, W)
with C 1 or 3, (N, H, W), or (N, H, W, C); one image per embedding row, same order.
Display: values already in [0, 1] are shown as they are (uint8 is divided by 255),
otherwise min-max scaled over all tiles of a figure jointly.

--embedder NAME:PATH: REAL and FAKE hold samples, embedded first (64 per forward pass,
eval mode, no gradients, on the CPU): images in the image-file formats above, uint8 in
[0, 255] or float in [0, 1] for the ready embedders, or waveforms (N, T) / (N, C, T) at
the embedder's sample rate for an audio one. NAME: inception (PATH: the FID weights
file, pt_inception-2015-12-05-6726825d.pth; `inception:` alone downloads it), dinov2,
clip, clap, wav2vec2, hubert (PATH: a hub id or a local save_pretrained folder; needs
`pip install lightning-embviz[hf]`), or module (PATH: a whole nn.Module written with
torch.save(module, PATH), loaded with the pickle loader: only files you trust; a module
with modality = "audio" reads waveforms). The embedded images feed the galleries
(unless --real-images / --fake-images are given) and metrics.json records the embedder.

--confidence C (in (0, 1), e.g. 0.95) adds a confidence interval to every metric:
metrics.json gains <metric>_low, <metric>_high and <metric>_se (standard error) for
precision, recall, density, coverage and fd, plus confidence and interval_seed, and the
printed table shows "coverage 0.7410 [0.7120, 0.7700]". The bounds are not
value +- 1.96 * <metric>_se (at 0.95): they are value +- t * se with t the Student-t
quantile on Satterthwaite's degrees of freedom (part of the variance is estimated from
a few random splits, so t is above the normal quantile, more so for small sets; fd uses
the normal quantile), then clipped to the metric's range (precision, recall, coverage
in [0, 1]; density, fd >= 0), so an interval can be asymmetric. It covers the
expected value of the metric over new draws of both sets of these sizes (another
validation set, another batch of samples). Method (lightning_embviz.intervals.
prdc_intervals): exact conditional variances plus random half splits without
replacement for the k-NN metrics (no bootstrap: duplicates would shrink the k-NN
radii), a second-order delta method for fd. Costs about 4 more full metric
computations. The splits are drawn with --seed, so results are reproducible. Each set
needs at least 2 (k + 1) samples; below 40 k per set a warning says the intervals are
unreliable. fd has no interval (NaN) unless both sets have more samples than features.
With a saved reference as REAL, the real embeddings it holds are used (results
identical to those from the real embeddings file).

"""
    + _EXTRA_METRICS
    + _MEMORIZATION
    + """\
-o DIR is created and checked (a writable directory, not a file) before any work.
Exit status: 0 on success, 2 on bad input or usage (one-line message on stderr).

"""
    + _several_processes("report")
)

COMPARE_EPILOG = (
    """\
example:
  embviz compare real.npy ckpt_epoch10.npy ckpt_epoch20.npy ckpt_epoch30.npy -o cmp/

Every fake set is placed into one frame fitted on the real set, so the panels are
directly comparable. Writes DIR/compare_<method>.png (one panel per fake set),
DIR/metrics.json and DIR/metrics.csv (one row per fake set: num_fake, precision,
recall, density, coverage, fd). The real set's k-NN radii are computed once for all
fake sets.

"""
    + _EXTRA_METRICS
    + """\
REAL may be a saved real reference (`embviz reference`): its radii are read, not
recomputed, and -k picks any k it was fitted with (default: its first). Results are
identical to those from the real embeddings file.

--confidence C (e.g. 0.95) computes intervals for every fake set (as `embviz report
--confidence`; the same --seed for every set) and writes <metric>_low, <metric>_high,
<metric>_se to metrics.json and metrics.csv. For each metric it then picks the best set
(precision, recall, coverage: highest; density: closest to 1, its value when the fake
and real distributions agree; fd: lowest) and marks with * in the printed table (and
<metric>_differs true in metrics.json, True in metrics.csv) every set that differs from
the best by a two-sample z test on the standard errors:

    z = (g_set - g_best) / sqrt(se_set^2 + se_best^2) > q

where g is the metric's distance from its ideal (-value; |density - 1|; fd) and q the
two-sided normal quantile of C (1.960 for 0.95); z is written as <metric>_z. This is
sharper than asking whether the intervals overlap (non-overlap needs a gap of about
(se_set + se_best) q, more than sqrt(se_set^2 + se_best^2) q). It is approximate: it
treats the two values as independent, but every set is compared against the same real
set. When a draw of the reals moves both sets' values the same way (the usual case for
similar generators), the true standard error of the difference is smaller and the test
is conservative (it marks fewer sets); it can be liberal if they move in opposite
directions. The best set is chosen from the same data and no correction is made for
testing several sets and metrics, so read a mark near the threshold as a hint, not as
proof.

Audio and groups (as `embviz report`; --fake-audio and --fake-groups as comma-separated
lists in the order of the FAKE files, an empty item skipping a set; one --fake-groups
file serves every set):
  embviz compare real.npy ep10.npy ep20.npy --real-audio real_wav.npy \\
      --fake-audio ep10_wav.npy,ep20_wav.npy --sample-rate 16000 \\
      --groups songs.npy --fake-groups prompts.csv -o cmp/
writes, per set, NAME/missed_real_audio/NN.wav (the reals this set misses, at most 8),
NAME/outlier_fake_audio/NN.wav, their spectrograms NAME/missed_real_audio.png and
NAME/outlier_fake_audio.png, and NAME/groups.csv (the per-group table, worst first;
group ids may be integers or strings), NAME being the set's name with characters other
than letters, digits, '.', '+', '-' as '_'.

"""
    + _several_processes("compare")
)

REFERENCE_EPILOG = """\
examples:
  embviz reference real.npy -k 3,5,10 -o ref.npz
  embviz report ref.npz fake.npy -k 10 -o out/
  embviz compare ref.npz ckpt_epoch10.npy ckpt_epoch20.npy -o cmp/
  embviz reference ref.npz -k 3,5,10,20 -o ref.npz   # add a k: refit from the stored reals
  embviz reference train.npy --train -o train_ref.npz   # a training set, for memorization
  embviz report real.npy fake.npy --train train_ref.npz -o out/
  embviz reference train_images.npy --train --embedder module:net.pt -o train_ref.npz

Fits the real set once: its k-NN radii for every k of -k from one pass over the
real-real distances, the real embeddings themselves, a SHA-256 fingerprint of them, the
file format version (2) and a SHA-256 checksum over all of it: a file whose radii, k,
dtype or version were edited or damaged is refused (exit status 2), never used. Version
1 files (earlier releases) are read, with their radii recomputed. `embviz report`
and `embviz compare` accept the file in place of REAL and then skip the real-real pass
(about a third of the distance work of each comparison); their results are identical
to those from the real embeddings file.

REAL: an embeddings file (.npy, .npz, .pt/.pth, .csv; see `embviz report -h`) or a
saved reference (refit with the new -k from the real set it holds).
-o FILE: .npz (NumPy, numpy.load(allow_pickle=False) reads it) or .pt/.pth (torch,
torch.load(weights_only=True) reads it); missing parent directories are created. An
existing FILE is replaced only when it is a saved reference (never REAL's embeddings or
other data), and the new file is written under a temporary name first, then renamed, so
a failed run leaves the old one in place. In Python: RealReference.load(FILE).
Prints one line: the file, N, D, dtype, the fitted k, the file size and the fitting time.

--train: REAL is the generator's training set (embeddings, or a saved TrainReference to
refit with other --cells/--seed), and FILE a TrainReference
(lightning_embviz.memorization.TrainReference: the training embeddings, the distance of
up to 10 000 sampled training rows to their nearest other training row, and --cells
k-means cells, default min(20, N), fitted with --seed) that `embviz report --train FILE`
and EmbeddingMonitor(train="FILE") load instead of refitting; their results are
identical to those from the training embeddings file (with the same cells and seed).
In Python: TrainReference.load(FILE). -k does not apply. One process fits it (under
torchrun, process 0).

--embedder NAME:PATH (as in `embviz report -h`): REAL holds images (or audio), embedded
first; the embeddings are fitted. Use the embedder that embeds the fakes.
"""
