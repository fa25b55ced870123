"""Speaker verification task: fbank front end in Ray Data, encoder + margin head, embedding extraction."""
