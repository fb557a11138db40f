"""Export to ONNX (:mod:`.onnx_export`) and running an exported model with ONNX Runtime
(:mod:`.onnx_runtime`, ``pip install -e .[deploy]``) or OpenVINO (:mod:`.openvino_runtime`,
``pip install -e .[openvino]``); calibrated int8 (:mod:`.quantize`)."""
