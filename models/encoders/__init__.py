"""The towers of the dual encoder, their preprocessing, tokenizers and pretrained backbones."""
