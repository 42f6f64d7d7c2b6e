"""For people: run folders read back (`analysis`, also used by the notebooks), the stakeholder
HTML report and the W&B Report.
"""
