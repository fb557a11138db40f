# mmdeploy's configs/mmseg/segmentation_onnxruntime_dynamic.py (mmdeploy 1.3.1), with our
# rewriters imported (mmseg_incnext/deploy/mmdeploy_rewriters.py): without them the FPN
# head's upsampling and UperNet's pyramid pooling are frozen at the size of the image the
# model is traced with. Use in place of mmdeploy's with its tools/deploy.py (docs/deploy.md).
custom_imports = dict(imports=['mmseg_incnext.deploy.mmdeploy_rewriters'],
                      allow_failed_imports=False)

onnx_config = dict(
    type='onnx',
    export_params=True,
    keep_initializers_as_inputs=False,
    opset_version=11,
    save_file='end2end.onnx',
    input_names=['input'],
    output_names=['output'],
    input_shape=None,
    optimize=True,
    dynamic_axes=dict(
        input={0: 'batch', 2: 'height', 3: 'width'},
        output={0: 'batch', 2: 'height', 3: 'width'}))
codebase_config = dict(type='mmseg', task='Segmentation', with_argmax=True)
backend_config = dict(type='onnxruntime')
