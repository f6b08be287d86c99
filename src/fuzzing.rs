//! Internals for the fuzz targets in `fuzz/`, compiled only under
//! `--cfg fuzzing` (cargo-fuzz sets it). Thin wrappers, so that the modules
//! they reach keep their privacy in every other build.
