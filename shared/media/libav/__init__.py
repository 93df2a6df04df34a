"""Child side: PyAV code that reads hostile files. Imported by the libav process
(`shared.media.child`) only; a service reaches it through `shared.media.MediaPool`."""
