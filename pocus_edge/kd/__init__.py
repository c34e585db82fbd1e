"""`pocus kd`: task-specific distillation (TS-KD) of a fine-tuned teacher into a phone-class student."""
