"""CNR's three stages (detect, synthesize, reset) and the pipeline that chains them."""
