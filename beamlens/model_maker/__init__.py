"""TFLite Model Maker's API on beamlens: ``from beamlens.model_maker import searcher``."""
