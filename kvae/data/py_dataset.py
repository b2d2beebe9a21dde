"""`WindowDataset`: the `keras.utils.PyDataset` front end of `WindowSource`.

A module of its own so that `kvae.data` does not import Keras, and at module
level so that it pickles: `workers` / `use_multiprocessing` work.
"""

import keras


class WindowDataset(keras.utils.PyDataset):
    """Batches of windows for `model.fit`; epoch `e` is `source.batch(e, i)`.

    Args:
        source: kvae.data.WindowSource. The windows.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`,
            `use_multiprocessing`, `max_queue_size`).
    """

    def __init__(self, source, **kwargs):
        super().__init__(**kwargs)
        self.source = source
        self.epoch = 0
        self._seen = set()

    def __len__(self):
        return self.source.num_batches

    def __getitem__(self, index):
        self._seen.add(int(index))
        return self.source.batch(self.epoch, index)

    def set_epoch(self, epoch):
        """Make `epoch` the current epoch (`kvae.fit` calls it at every epoch start, so resuming works)."""
        self.epoch = int(epoch)
        self._seen.clear()

    def on_epoch_end(self):
        # Keras also calls this after peeking at batch 0 for shapes, before
        # the first epoch: only an epoch whose every batch was read counts.
        if len(self._seen) >= len(self):
            self.epoch += 1
        self._seen.clear()
