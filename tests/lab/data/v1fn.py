def measure(params):
    return {"score": -(params["x"] ** 2)}
