"""Post-training stages after pretraining: sft.py, dpo.py, rl.py on the shared machinery of stage.py."""
