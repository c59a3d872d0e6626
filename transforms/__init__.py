"""Reusable Apache Beam transforms and DoFns (reading COCO, decoding, inference, shard writing)."""
