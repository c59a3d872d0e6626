"""One filesystem facade, one atomic writer, TFRecord framing: the only Beam-aware part of models/."""
