"""MelHuBERT compression suite: corpus, pretraining, compression, downstream probes and efficiency."""

import warnings

# s3prl 0.4.18 calls torchaudio.set_audio_backend, deprecated in torchaudio 2.8, when it is imported
warnings.filterwarnings("ignore", message=r".*set_audio_backend has been deprecated", category=UserWarning)
