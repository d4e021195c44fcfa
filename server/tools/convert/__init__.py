"""Model conversion: TF-TRT optimisation and importing frozen graphs and checkpoints as SavedModels."""
