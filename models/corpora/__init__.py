"""Where images and captions come from: the COCO reader and the synthetic default corpus."""
