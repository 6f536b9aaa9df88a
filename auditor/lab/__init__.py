"""The planted-shortcut lab: synthetic datasets with known cues, small trained models and the
demo. Used by the demo, the benchmarks and the tests; the audit itself never imports it."""
