"""Stage 6, causes: adding vectors to the residual stream during generation (`steer`), the dose-response
experiments (`experiments`), the blackmail scenario and its grader (`blackmail`), and reward hacking
with model-written code run in an OS sandbox (`rewardhack`, `sandbox`)."""
