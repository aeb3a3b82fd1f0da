"""Building the QA models: standard fine-tuning (:mod:`training.finetune`) and LengthDrop (:mod:`training.lengthdrop`)."""
